//! Sends one service API command and prints the answer: what a backend does to create a
//! tenant, send the owner's message or read a conversation.
//!
//! ```sh
//! cargo run -p salesboy-examples --bin commander -- tenant.list
//! cargo run -p salesboy-examples --bin commander -- t acme message.send \
//!     '{"to":"15551234567","text":"Your order ships today.","client_ref":"order-1042"}'
//! ```

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

const USAGE: &str = "usage: commander <operator command> [json]\n       commander t <tenant> <tenant command> [json]\n(NATS_URL sets the server, default nats://127.0.0.1:4222)";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (subject, body) = match args.as_slice() {
        [t, tenant, command, rest @ ..] if t == "t" => (
            format!("sb.v1.api.t.{tenant}.{command}"),
            rest.first().cloned(),
        ),
        [command, rest @ ..] if command != "--help" => {
            (format!("sb.v1.api.{command}"), rest.first().cloned())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let client = match async_nats::connect(salesboy_examples::nats_url()).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("cannot connect to NATS: {e}");
            return ExitCode::FAILURE;
        }
    };
    let request = async_nats::Request::new()
        .payload(body.unwrap_or_default().into())
        .timeout(Some(Duration::from_secs(10)));
    let reply = match client.send_request(subject.clone(), request).await {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!("{subject}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json: Value = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
    // An error answers the micro error headers and {"error": {"code", "message"}}.
    if let Some(code) = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
    {
        eprintln!(
            "{subject}: {code} {}: {}",
            json["error"]["code"].as_str().unwrap_or("?"),
            json["error"]["message"].as_str().unwrap_or("?")
        );
        return ExitCode::FAILURE;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json).unwrap_or_default()
    );
    ExitCode::SUCCESS
}
