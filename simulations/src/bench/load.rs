//! Load generators: a closed loop (K workers, each posting its next delivery as soon as
//! the previous one is answered: the maximum rate) and an open loop (deliveries posted on a
//! fixed schedule whatever the node does, so a slow node cannot slow the load down and hide
//! its latency).
//!
//! A delivery that is not answered 200 is retried (as Meta does) up to [`MAX_ATTEMPTS`]
//! times, 100 ms apart; every failure is counted and reported.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use salesboy_protocol::whatsapp::signature::SIGNATURE_HEADER;

use super::setup::Delivery;

/// Attempts per delivery before it counts as not accepted.
pub const MAX_ATTEMPTS: u32 = 5;
/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How one delivery went.
#[derive(Debug, Clone, Default)]
pub struct Posted {
    /// When its first attempt started.
    pub started: Option<Instant>,
    /// When it was answered 200 (`None`: never).
    pub accepted: Option<Instant>,
    /// Failed attempts, by cause (`http 503`, `connect`, …).
    pub failures: Vec<String>,
}

/// Posts one delivery, retrying failures; what happened.
pub async fn post(http: &reqwest::Client, url: &str, delivery: &Delivery) -> Posted {
    let mut posted = Posted {
        started: Some(Instant::now()),
        ..Posted::default()
    };
    for attempt in 1..=MAX_ATTEMPTS {
        let result = http
            .post(url)
            .header(SIGNATURE_HEADER, delivery.signature.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(delivery.body.clone())
            .send()
            .await;
        match result {
            Ok(response) if response.status() == reqwest::StatusCode::OK => {
                posted.accepted = Some(Instant::now());
                return posted;
            }
            Ok(response) => posted
                .failures
                .push(format!("http {}", response.status().as_u16())),
            Err(error) if error.is_timeout() => posted.failures.push("timeout".into()),
            Err(error) if error.is_connect() => posted.failures.push("connect".into()),
            Err(_) => posted.failures.push("request error".into()),
        }
        if attempt < MAX_ATTEMPTS {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    posted
}

/// What a load run posted.
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    /// Every delivery, in delivery order.
    pub posted: Vec<Posted>,
}

impl LoadOutcome {
    /// Deliveries answered 200.
    pub fn accepted(&self) -> usize {
        self.posted.iter().filter(|p| p.accepted.is_some()).count()
    }

    /// Failed attempts by cause (retried or final).
    pub fn failures(&self) -> BTreeMap<String, usize> {
        let mut failures = BTreeMap::new();
        for cause in self.posted.iter().flat_map(|p| &p.failures) {
            *failures.entry(cause.clone()).or_insert(0) += 1;
        }
        failures
    }

    /// The first attempt's start.
    pub fn first_post(&self) -> Option<Instant> {
        self.posted.iter().filter_map(|p| p.started).min()
    }

    /// The last acceptance.
    pub fn last_accepted(&self) -> Option<Instant> {
        self.posted.iter().filter_map(|p| p.accepted).max()
    }
}

/// Posts every delivery with `concurrency` workers, each posting its next delivery as soon
/// as the previous one is answered. `accepted` counts acceptances as they happen (for
/// progress lines).
pub async fn closed_loop(
    http: &reqwest::Client,
    url: &str,
    deliveries: Arc<Vec<Delivery>>,
    concurrency: usize,
    accepted: Arc<AtomicUsize>,
) -> LoadOutcome {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (http, url) = (http.clone(), url.to_owned());
        let (deliveries, next, accepted) = (
            Arc::clone(&deliveries),
            Arc::clone(&next),
            Arc::clone(&accepted),
        );
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(delivery) = deliveries.get(i) else {
                    return done;
                };
                let posted = post(&http, &url, delivery).await;
                if posted.accepted.is_some() {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                done.push((i, posted));
            }
        }));
    }
    let mut posted = vec![Posted::default(); deliveries.len()];
    for worker in workers {
        if let Ok(done) = worker.await {
            for (i, p) in done {
                posted[i] = p;
            }
        }
    }
    LoadOutcome { posted }
}

/// Posts delivery `i` at `start + i / rate` ([`scheduled`]), each in its own task, whether
/// or not earlier ones were answered. Returns when every post is done; each delivery's
/// `started` against its schedule shows whether the generator kept up.
///
/// The schedule is kept by a dedicated thread sleeping to each deadline with the operating
/// system's timer (tens of microseconds late), not by tokio's timer wheel (which rounds every
/// sleep up to the next millisecond); the posts themselves run on the runtime.
pub async fn open_loop(
    http: &reqwest::Client,
    url: &str,
    deliveries: Arc<Vec<Delivery>>,
    rate: f64,
    start: Instant,
    accepted: Arc<AtomicUsize>,
) -> LoadOutcome {
    let runtime = tokio::runtime::Handle::current();
    let (http, url) = (http.clone(), url.to_owned());
    let count = deliveries.len();
    let pacer = std::thread::spawn(move || {
        let mut tasks = Vec::with_capacity(count);
        for i in 0..count {
            let at = scheduled(start, rate, i);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let (http, url, deliveries, accepted) = (
                http.clone(),
                url.clone(),
                Arc::clone(&deliveries),
                Arc::clone(&accepted),
            );
            tasks.push(runtime.spawn(async move {
                let posted = post(&http, &url, &deliveries[i]).await;
                if posted.accepted.is_some() {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                posted
            }));
        }
        tasks
    });
    let tasks = match tokio::task::spawn_blocking(move || pacer.join()).await {
        Ok(Ok(tasks)) => tasks,
        _ => return LoadOutcome { posted: Vec::new() },
    };
    let mut posted = Vec::with_capacity(tasks.len());
    for task in tasks {
        posted.push(task.await.unwrap_or_default());
    }
    LoadOutcome { posted }
}

/// The scheduled send time of delivery `i` of an open loop.
pub fn scheduled(start: Instant, rate: f64, i: usize) -> Instant {
    start + Duration::from_secs_f64(1.0 / rate.max(0.001)).mul_f64(i as f64)
}
