//! The retrieval evaluation on the fake embedder (CI): hybrid ranking finds at least what
//! full text finds, and the paraphrased and translated questions full text misses.

use salesboy_sim::retrieval_eval::{default_set, run};

#[tokio::test]
async fn hybrid_recall_is_at_least_full_text_recall_on_the_fake() {
    let set = default_set().expect("the built-in set");
    assert!(set.questions.len() >= 30);
    let report = run(&set, None, 3).await.expect("evaluation");
    println!("{}", report.markdown());
    assert!(report.fake);
    let all = report.all();
    assert_eq!(all.group, "all");
    assert_eq!(all.fulltext.questions, set.questions.len());
    assert!(
        all.hybrid.recall_at_k >= all.fulltext.recall_at_k,
        "{all:?}"
    );
    // Not a tie: the questions that share no word with their passage are where vectors
    // help.
    for group in ["paraphrase", "spanish", "french"] {
        let c = report
            .comparisons
            .iter()
            .find(|c| c.group == group)
            .expect("group");
        assert!(c.hybrid.recall_at_k > c.fulltext.recall_at_k, "{c:?}");
    }
}
