//! Known-answer tests for `X-Hub-Signature-256`: the wire bodies of
//! `tests/fixtures/whatsapp/wire/` with the signatures of `SIGNATURES.tsv`.

use std::path::PathBuf;

use salesboy_protocol::whatsapp::signature::{
    SIGNATURE_HEADER, SignatureError, sign, verify_signature,
};

const APP_SECRET: &[u8] = b"test_app_secret_do_not_use";

fn wire_dir() -> PathBuf {
    [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "whatsapp",
        "wire",
    ]
    .iter()
    .collect()
}

/// `(file name, raw body, header value)` for every vector.
fn vectors() -> Vec<(String, Vec<u8>, String)> {
    let table = std::fs::read_to_string(wire_dir().join("SIGNATURES.tsv")).unwrap();
    table
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, header) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            let body =
                std::fs::read(wire_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name.to_owned(), body, header.to_owned())
        })
        .collect()
}

#[test]
fn every_vector_verifies_and_signs_to_the_same_header() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 11);
    for (name, body, header) in &vectors {
        assert_eq!(
            verify_signature(APP_SECRET, body, Some(header)),
            Ok(()),
            "{name}"
        );
        assert_eq!(&sign(APP_SECRET, body), header, "{name}");
    }
}

#[test]
fn every_wire_body_has_a_vector() {
    let mut listed: Vec<String> = vectors().into_iter().map(|(name, _, _)| name).collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(wire_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".json"))
        .collect();
    listed.sort();
    on_disk.sort();
    assert_eq!(listed, on_disk);
}

#[test]
fn a_one_byte_change_to_the_body_is_a_mismatch() {
    for (name, body, header) in vectors() {
        for at in [0, body.len() / 2, body.len() - 1] {
            let mut tampered = body.clone();
            tampered[at] ^= 0x01;
            assert_eq!(
                verify_signature(APP_SECRET, &tampered, Some(&header)),
                Err(SignatureError::Mismatch),
                "{name} byte {at}"
            );
        }
        let mut longer = body.clone();
        longer.push(b' ');
        assert_eq!(
            verify_signature(APP_SECRET, &longer, Some(&header)),
            Err(SignatureError::Mismatch),
            "{name}"
        );
    }
}

#[test]
fn a_wrong_secret_is_a_mismatch() {
    let (_, body, header) = &vectors()[0];
    for secret in [
        b"test_app_secret_do_not_us".as_slice(),
        b"",
        b"another secret",
    ] {
        assert_eq!(
            verify_signature(secret, body, Some(header)),
            Err(SignatureError::Mismatch)
        );
    }
}

#[test]
fn a_missing_header_is_missing() {
    let (_, body, _) = &vectors()[0];
    assert_eq!(
        verify_signature(APP_SECRET, body, None),
        Err(SignatureError::Missing)
    );
}

#[test]
fn malformed_headers_are_bad_format() {
    let (_, body, header) = &vectors()[0];
    let hex = header.strip_prefix("sha256=").unwrap();
    let bad = [
        String::new(),
        hex.to_owned(),
        format!("sha1={hex}"),
        format!("SHA256={hex}"),
        format!("sha256:{hex}"),
        format!("sha256={}", &hex[..62]),
        format!("sha256={hex}00"),
        format!("sha256={}zz", &hex[..62]),
        "sha256=".to_owned(),
        format!("sha256= {hex}"),
    ];
    for value in bad {
        assert_eq!(
            verify_signature(APP_SECRET, body, Some(&value)),
            Err(SignatureError::BadFormat),
            "{value:?}"
        );
    }
    // Surrounding whitespace and uppercase hex digits are tolerated.
    assert_eq!(
        verify_signature(APP_SECRET, body, Some(&format!(" {header}\t"))),
        Ok(())
    );
    assert_eq!(
        verify_signature(
            APP_SECRET,
            body,
            Some(&format!("sha256={}", hex.to_uppercase()))
        ),
        Ok(())
    );
}

#[test]
fn errors_never_show_the_secret_or_the_expected_signature() {
    let (_, _, header) = &vectors()[0];
    let secret = String::from_utf8(APP_SECRET.to_vec()).unwrap();
    let hex = header.strip_prefix("sha256=").unwrap();
    for error in [
        SignatureError::Missing,
        SignatureError::BadFormat,
        SignatureError::Mismatch,
    ] {
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains(&secret) && !text.contains(hex), "{text}");
        }
        assert_eq!(error.to_string(), error.to_string().to_lowercase());
    }
    let mismatch = verify_signature(APP_SECRET, b"{}", Some(header)).unwrap_err();
    assert_eq!(mismatch.to_string(), "signature does not match the body");
    assert_eq!(SIGNATURE_HEADER, "X-Hub-Signature-256");
}
