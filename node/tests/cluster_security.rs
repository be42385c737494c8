//! The cluster bus locked (issue 11): two nodes on a nats-server that requires TLS with
//! client certificates (made here) and a password; wrong credentials stop a node at start
//! with an error naming what failed; a client with valid NATS credentials but without the
//! cluster key cannot make a node send, drain or adopt — its messages are refused and
//! counted, and nothing reaches WhatsApp — nor read or forge a placement in the directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectOptions, Request};
use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use reqwest::StatusCode;
use salesboy_actors::command::{CommandReply, TenantCommand};
use salesboy_actors::handoff::TenantHandoff;
use salesboy_node::bus::{Bus, NatsBus};
use salesboy_node::cluster::ClusterKey;
use salesboy_node::cluster::wire::{ControlRequest, RemoteError};
use salesboy_node::config::Config;
use salesboy_node::run;
use salesboy_protocol::{ChatId, Codec, Envelope, MessageId, NodeId, subjects};
use salesboy_testkit::gateway::WAIT;
use salesboy_testkit::nats::NatsServer;
use salesboy_testkit::{
    Db, FakeWhatsApp, FakeWhatsAppOptions, Gateway, SANDBOX_CLUSTER_KEY, eventually, webhooks,
};
use secrecy::SecretString;

const NODE_PASSWORD: &str = "node-password-planted";
const INTRUDER_PASSWORD: &str = "intruder-password";
const PHONE: &str = "1065403522001";
/// The customers' numbers: this and a digit.
const CUSTOMER: &str = "1650555000";
/// A key that is not the cluster's.
const OTHER_KEY: &str = "HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

/// A CA, the server's certificate (for 127.0.0.1) and a client certificate, in PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text);
        write("ca.pem", ca.pem()).expect("write");
        for (name, names, usage) in [
            (
                "server",
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            (
                "client",
                vec!["salesboy-node".to_owned()],
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).expect("certificate");
            write(&format!("{name}.pem"), cert.pem()).expect("write");
            write(&format!("{name}-key.pem"), key.serialize_pem()).expect("write");
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A nats-server requiring TLS, verified client certificates and a password.
    fn server(&self) -> NatsServer {
        let p = |name: &str| self.path(name).display().to_string();
        NatsServer::start_with_config(&format!(
            r#"
tls {{
  cert_file: "{}"
  key_file: "{}"
  ca_file: "{}"
  verify: true
  timeout: 5
}}
authorization {{
  users = [
    {{ user: "node", password: "{NODE_PASSWORD}" }}
    {{ user: "intruder", password: "{INTRUDER_PASSWORD}" }}
  ]
}}
"#,
            p("server.pem"),
            p("server-key.pem"),
            p("ca.pem"),
        ))
        .expect("nats-server with TLS")
    }

    /// `config` set to reach `server` over TLS as `user`.
    fn configure(&self, config: &mut Config, server: &NatsServer, user: &str, password: &str) {
        config.nats_url = Some(server.url());
        config.nats_user = Some(user.into());
        config.nats_password = Some(SecretString::from(password));
        config.nats_tls_ca_file = Some(self.path("ca.pem"));
        config.nats_tls_cert_file = Some(self.path("client.pem"));
        config.nats_tls_key_file = Some(self.path("client-key.pem"));
        config.cluster_key = Some(SecretString::from(SANDBOX_CLUSTER_KEY));
    }

    /// A raw client with valid NATS credentials (and no cluster key).
    async fn intruder(&self, server: &NatsServer) -> async_nats::Client {
        ConnectOptions::new()
            .user_and_password("intruder".into(), INTRUDER_PASSWORD.into())
            .add_root_certificates(self.path("ca.pem"))
            .add_client_certificate(self.path("client.pem"), self.path("client-key.pem"))
            .require_tls(true)
            .connect(server.url())
            .await
            .expect("the intruder has valid NATS credentials")
    }
}

fn base_config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_owned(),
        ..Config::default()
    }
}

async fn start_error(config: Config) -> String {
    match run::start(config).await {
        Ok(_) => panic!("the node started"),
        Err(error) => format!("{error:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_wrong_credentials_or_no_cluster_key_stops_with_an_error_naming_it() {
    run::install_crypto_provider();
    let pki = Pki::new();
    let server = pki.server();
    let dir = tempfile::tempdir().expect("temp dir");

    let mut wrong = base_config(dir.path());
    pki.configure(&mut wrong, &server, "node", "wrong-password-planted");
    let error = start_error(wrong).await;
    assert!(error.contains("authentication refused"), "{error}");
    assert!(error.contains("nats_password"), "{error}");
    assert!(!error.contains("planted"), "{error}");

    let mut no_ca = base_config(dir.path());
    pki.configure(&mut no_ca, &server, "node", NODE_PASSWORD);
    no_ca.nats_tls_ca_file = None;
    let error = start_error(no_ca).await;
    assert!(error.contains("TLS failed"), "{error}");
    assert!(!error.contains("planted"), "{error}");

    let mut no_key = base_config(dir.path());
    pki.configure(&mut no_key, &server, "node", NODE_PASSWORD);
    no_key.cluster_key = None;
    let error = start_error(no_key).await;
    assert!(error.contains("no cluster key"), "{error}");
}

/// The value of counter `name{reason="…"}` in a Prometheus text.
fn counter(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("salesboy_bus_rejected_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

async fn node(
    pki: &Pki,
    server: &NatsServer,
    whatsapp: &FakeWhatsApp,
    i: usize,
    database: Option<String>,
) -> Gateway {
    let mut config = Config::default();
    pki.configure(&mut config, server, "node", NODE_PASSWORD);
    let id = NodeId::new(format!("node-{i}")).expect("node id");
    let bus: Arc<dyn Bus> = Arc::new(
        NatsBus::connect(&server.url(), config.nats_options(format!("salesboy-{id}")))
            .await
            .expect("the node connects over TLS with its password"),
    );
    let base = whatsapp.base_url();
    Gateway::start_on(Db::Sqlite, Some(bus), move |c| {
        c.node_id = id;
        c.whatsapp_api_base = base;
        c.failure_timeout_ms = 2_000;
        c.debounce_ms = 0;
        c.database_url = database;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cluster_key_nobody_makes_a_node_send_drain_or_adopt() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    run::install_crypto_provider();
    let pki = Pki::new();
    let server = pki.server();
    let whatsapp = FakeWhatsApp::start(FakeWhatsAppOptions::default()).await;
    let a = node(&pki, &server, &whatsapp, 0, None).await;
    let shared = a.config.effective_database_url();
    let b = node(&pki, &server, &whatsapp, 1, Some(shared)).await;
    let tenant = a.add_tenant("acme", PHONE, None).await;
    a.add_knowledge(&tenant, "faq", &["We open at 9am every day."])
        .await;

    // The cluster works over TLS and sealed messages: a message through either node is
    // answered once (one of them routes to the other).
    for (i, gateway) in [&a, &b].into_iter().enumerate() {
        let customer = format!("{CUSTOMER}{i}");
        let body = webhooks::text_message(
            PHONE,
            &customer,
            &format!("wamid.ok.{i}"),
            "when do you open?",
        );
        assert_eq!(gateway.post_webhook(&body).await, StatusCode::OK);
    }
    eventually(WAIT, || async {
        (whatsapp.sent_count() >= 2).then_some(())
    })
    .await;
    let sent = whatsapp.sent_count();

    let cluster = a.node.cluster.as_ref().expect("a cluster member");
    let placed = cluster
        .directory()
        .fetch(&tenant)
        .await
        .expect("directory")
        .expect("the tenant is placed")
        .entry;
    let (host, other) = if placed.node.as_str() == "node-0" {
        (placed.node.clone(), NodeId::new("node-1").unwrap())
    } else {
        (placed.node.clone(), NodeId::new("node-0").unwrap())
    };
    let intruder = pki.intruder(&server).await;
    let before = metrics(&a).await;

    // An owner send in an envelope at the current epoch: unsigned, then sealed under
    // another key. Neither is answered.
    let command = TenantCommand::OwnerSend {
        chat: ChatId::new(format!("{CUSTOMER}0")).unwrap(),
        body: "forged by the intruder".into(),
    };
    let envelope = Envelope {
        id: MessageId::from_u128(0xf0f0),
        sender: other.clone(),
        target: command.target(&tenant),
        epoch: placed.epoch,
        kind: command.kind(),
        payload: Codec::Bincode.encode(&command).unwrap(),
    };
    let envelope = Codec::Bincode.encode(&envelope).unwrap();
    let inbox = subjects::node_inbox(&host);
    let wrong = ClusterKey::parse(OTHER_KEY, None).unwrap();
    assert_unanswered(&intruder, &inbox, Bytes::from(envelope.clone())).await;
    assert_unanswered(&intruder, &inbox, wrong.seal_request(&inbox, &envelope).0).await;

    // Drain to both nodes, an adoption to the other node: unsigned and under another key.
    let adopt = ControlRequest::Adopt {
        handoff: TenantHandoff {
            tenant: tenant.clone(),
            epoch: placed.epoch,
            conversations: vec![],
            session: None,
            held: vec![],
        },
        epoch: placed.epoch + 1,
        mark_revision: 1,
    };
    for (node, request) in [
        (&host, ControlRequest::Drain),
        (&other, ControlRequest::Drain),
        (&other, adopt),
    ] {
        let subject = subjects::node_control(node);
        let bytes = Codec::Bincode.encode(&request).unwrap();
        assert_unanswered(&intruder, &subject, Bytes::from(bytes.clone())).await;
        assert_unanswered(&intruder, &subject, wrong.seal_request(&subject, &bytes).0).await;
    }

    // All refused and counted (the nodes share this process's recorder).
    let after = metrics(&a).await;
    assert_eq!(
        counter(&after, "unsigned") - counter(&before, "unsigned"),
        4
    );
    assert_eq!(counter(&after, "forged") - counter(&before, "forged"), 4);
    // Nothing was sent, nobody drains, the tenant stays where it was.
    assert_eq!(whatsapp.sent_count(), sent);
    assert!(
        !whatsapp
            .sent()
            .iter()
            .any(|m| format!("{m:?}").contains("forged")),
    );
    for gateway in [&a, &b] {
        let member = gateway.node.cluster.as_ref().expect("member");
        assert!(!*member.exit_signal().borrow(), "no drain");
    }
    let still = cluster.directory().fetch(&tenant).await.unwrap().unwrap();
    assert_eq!(still.entry.node, host);
    assert_eq!(still.entry.epoch, placed.epoch);

    // A sealed envelope must carry the epoch the host holds: an older one (0 included) is
    // sent back to the directory, not carried out.
    let key = salesboy_testkit::sandbox_cluster_key();
    for (n, epoch) in [0, placed.epoch.saturating_sub(1), placed.epoch + 1]
        .into_iter()
        .enumerate()
    {
        let stale = Envelope {
            id: MessageId::from_u128(0xe0 + n as u128),
            sender: other.clone(),
            target: command.target(&tenant),
            epoch,
            kind: command.kind(),
            payload: Codec::Bincode.encode(&command).unwrap(),
        };
        let (sealed, nonce) = key.seal_request(&inbox, &Codec::Bincode.encode(&stale).unwrap());
        let reply = intruder
            .send_request(
                inbox.clone(),
                Request::new()
                    .payload(sealed)
                    .timeout(Some(Duration::from_secs(5))),
            )
            .await
            .expect("answered");
        let answer: Result<CommandReply, RemoteError> = Codec::Bincode
            .decode(
                &key.open_answer(&nonce, &reply.payload)
                    .expect("sealed answer"),
            )
            .unwrap();
        assert_eq!(answer, Err(RemoteError::NotHere), "epoch {epoch}");
    }
    assert_eq!(whatsapp.sent_count(), sent);

    // The directory bucket: the intruder reads only sealed bytes, and a placement it writes
    // (the tenant on the other node, at a newer epoch) is believed by no node: it counts as
    // no placement, and the tenant is placed again over it.
    let buckets = async_nats::jetstream::new(intruder.clone());
    let directory = buckets
        .get_key_value(subjects::DIRECTORY_BUCKET)
        .await
        .expect("the intruder may use JetStream");
    let stored = directory
        .get(tenant.as_str())
        .await
        .expect("read")
        .expect("the placement is stored");
    let host_name = host.as_str().as_bytes();
    assert!(
        !stored.windows(host_name.len()).any(|w| w == host_name),
        "the placement is sealed"
    );
    let before = metrics(&a).await;
    let forged_epoch = placed.epoch + 1;
    let forged = serde_json::json!({
        "node": other.as_str(), "epoch": forged_epoch, "state": "active"
    });
    directory
        .put(tenant.as_str(), forged.to_string().into())
        .await
        .expect("the intruder may write the bucket");
    eventually(WAIT, || async {
        let refused = counter(&metrics(&a).await, "unsigned") - counter(&before, "unsigned");
        // Both nodes' directory watches refused it.
        (refused >= 2).then_some(())
    })
    .await;
    for gateway in [&a, &b] {
        let member = gateway.node.cluster.as_ref().expect("member");
        let believed = member.directory().fetch(&tenant).await.expect("fetch");
        assert!(
            believed.is_none_or(|v| v.entry.epoch != forged_epoch || v.entry.node != other),
            "the forged placement is not believed"
        );
    }
    // A message for the tenant is answered, once, and the placement is sealed again.
    let sent = whatsapp.sent_count();
    let body = webhooks::text_message(PHONE, &format!("{CUSTOMER}2"), "wamid.ok.2", "open?");
    assert_eq!(a.post_webhook(&body).await, StatusCode::OK);
    eventually(WAIT, || async {
        (whatsapp.sent_count() > sent).then_some(())
    })
    .await;
    let again = cluster
        .directory()
        .fetch(&tenant)
        .await
        .expect("fetch")
        .expect("placed again");
    assert!(again.entry.epoch > placed.epoch, "{again:?}");
    let stored = directory
        .get(tenant.as_str())
        .await
        .expect("read")
        .expect("stored");
    assert!(stored.starts_with(b"SBs1"), "sealed again");
    assert_eq!(
        whatsapp
            .sent()
            .iter()
            .filter(|m| format!("{m:?}").contains(&format!("{CUSTOMER}2")))
            .count(),
        1,
        "answered once"
    );
}

/// A request that no node answers: it times out (the subject has a subscriber, so it is not
/// "no responders").
async fn assert_unanswered(client: &async_nats::Client, subject: &str, payload: Bytes) {
    let reply = client
        .send_request(
            subject.to_owned(),
            Request::new()
                .payload(payload)
                .timeout(Some(Duration::from_millis(1_500))),
        )
        .await;
    match reply {
        Err(error) => assert_eq!(
            error.kind(),
            async_nats::client::RequestErrorKind::TimedOut,
            "{subject}"
        ),
        Ok(_) => panic!("{subject} answered a request without the cluster key"),
    }
}

async fn metrics(gateway: &Gateway) -> String {
    gateway
        .http
        .get(format!("{}/metrics", gateway.admin_base))
        .bearer_auth(salesboy_testkit::gateway::ADMIN_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Connects a bus as `config` says to `server`; the error text if it cannot.
async fn connect(config: &Config, server: &NatsServer) -> Result<NatsBus, String> {
    NatsBus::connect(&server.url(), config.nats_options("login-test".into()))
        .await
        .map_err(|error| format!("{error:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_seed_and_token_logins_connect_and_wrong_ones_are_named() {
    run::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");

    // nkey: the server knows the user's public key; the node signs with the seed file.
    let user = nkeys::KeyPair::new_user();
    let seed_file = dir.path().join("node.nk");
    std::fs::write(&seed_file, user.seed().expect("seed")).expect("write seed");
    let server = NatsServer::start_with_config(&format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}",
        user.public_key()
    ))
    .expect("nats-server with an nkey user");
    let mut config = base_config(dir.path());
    config.nats_nkey_seed_file = Some(seed_file);
    connect(&config, &server).await.expect("the nkey login");
    let stranger = nkeys::KeyPair::new_user();
    let stranger_file = dir.path().join("stranger.nk");
    std::fs::write(&stranger_file, stranger.seed().expect("seed")).expect("write seed");
    config.nats_nkey_seed_file = Some(stranger_file);
    let Err(error) = connect(&config, &server).await else {
        panic!("an unknown nkey is refused");
    };
    assert!(!error.contains(&stranger.seed().expect("seed")), "{error}");

    // token
    let server =
        NatsServer::start_with_config("authorization { token: \"token-planted-0123456789\" }")
            .expect("nats-server with a token");
    let mut config = base_config(dir.path());
    config.nats_token = Some(SecretString::from("token-planted-0123456789"));
    connect(&config, &server).await.expect("the token login");
    config.nats_token = Some(SecretString::from("wrong-token-planted"));
    let Err(error) = connect(&config, &server).await else {
        panic!("a wrong token is refused");
    };
    assert!(!error.contains("planted"), "{error}");
}

/// A NATS JWT (`ed25519-nkey`) with `claims`, issued by `issuer` for `subject`.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use sha2::Digest as _;
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let mut claims = serde_json::json!({
        "iat": 1_700_000_000u64,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    // The id is the hash of the claims without it (as nsc writes it; servers do not check it).
    let id = hex::encode_upper(sha2::Sha256::digest(claims.to_string()));
    claims["jti"] = serde_json::Value::String(id);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let signature = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An account's claims with JetStream allowed.
fn account_claims() -> serde_json::Value {
    serde_json::json!({
        "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
        },
        "type": "account",
        "version": 2
    })
}

/// A credentials file as `nsc` writes it: the user's JWT and its nkey seed.
fn credentials(jwt: &str, user: &nkeys::KeyPair) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().expect("seed")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_file_logs_in_under_operator_jwts_and_a_stranger_is_refused() {
    run::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");

    // Operator mode as nsc sets it up: an operator, a system account, the nodes' account
    // (JetStream on), resolved from memory; a user issued by the nodes' account.
    let operator = nkeys::KeyPair::new_operator();
    let system = nkeys::KeyPair::new_account();
    let account = nkeys::KeyPair::new_account();
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "salesboy",
        serde_json::json!({
            "system_account": system.public_key(), "type": "operator", "version": 2
        }),
    );
    let system_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({ "type": "account", "version": 2 }),
    );
    let account_jwt = nats_jwt(&operator, &account.public_key(), "nodes", account_claims());
    let operator_file = dir.path().join("operator.jwt");
    std::fs::write(&operator_file, &operator_jwt).expect("write operator");
    let server = NatsServer::start_with_config(&format!(
        r#"
operator: "{}"
system_account: "{}"
resolver: MEMORY
resolver_preload: {{
  {}: "{system_jwt}"
  {}: "{account_jwt}"
}}
"#,
        operator_file.display(),
        system.public_key(),
        system.public_key(),
        account.public_key(),
    ))
    .expect("nats-server in operator mode");

    let user = nkeys::KeyPair::new_user();
    let user_claims = serde_json::json!({
        "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        "type": "user", "version": 2
    });
    let user_jwt = nats_jwt(&account, &user.public_key(), "node", user_claims.clone());
    let creds = dir.path().join("node.creds");
    std::fs::write(&creds, credentials(&user_jwt, &user)).expect("write creds");
    let mut config = base_config(dir.path());
    config.nats_credentials_file = Some(creds);
    let bus = connect(&config, &server)
        .await
        .expect("the credentials-file login");
    // JetStream works for the account: a bucket opens, a value goes in and comes back.
    let kv = bus.kv("sb_login_check", 1).await.expect("JetStream bucket");
    kv.put("k", Bytes::from_static(b"v")).await.expect("put");
    assert_eq!(
        kv.get("k").await.expect("get").expect("value").value,
        &b"v"[..]
    );

    // A user issued by an account the server does not know is refused, and the error names
    // the credentials file, not the seed.
    let stranger_account = nkeys::KeyPair::new_account();
    let stranger = nkeys::KeyPair::new_user();
    let stranger_jwt = nats_jwt(&stranger_account, &stranger.public_key(), "x", user_claims);
    let stranger_creds = dir.path().join("stranger.creds");
    std::fs::write(&stranger_creds, credentials(&stranger_jwt, &stranger)).expect("write");
    config.nats_credentials_file = Some(stranger_creds);
    let Err(error) = connect(&config, &server).await else {
        panic!("a user of an unknown account is refused");
    };
    assert!(error.contains("nats_credentials_file"), "{error}");
    assert!(!error.contains(&stranger.seed().expect("seed")), "{error}");
}
