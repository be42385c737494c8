//! The admin commands of the `salesboy` binary: `tenant`, `kb`, `chat` talk to a running
//! node's admin API (docs/api.md); `dev` holds offline helpers for development.
//!
//! The node is found at `--url`, else at `http://` + the configured `http_addr`
//! (`SALESBOY_HTTP_ADDR`, or `--config FILE`). The bearer token is `SALESBOY_ADMIN_TOKEN`,
//! else the file [`ADMIN_TOKEN_FILE`] in the data dir, which the node writes on first start
//! when no token is configured. Answers are printed as pretty JSON; an error answer makes
//! the command fail with the API's message.
//!
//! - [`backup`]: `backup`, an online copy of the embedded SQLite database;
//! - [`client`]: the HTTP client, URL and token resolution;
//! - [`cluster`]: `status` and `drain`, through NATS;
//! - [`nats`]: `nats-permissions`, a tenant's NATS user entry and events consumer;
//! - [`secrets`]: `secrets rotate` and `secrets generate-key`, on the database directly.
pub mod backup;
pub mod cluster;

pub mod client;
pub mod nats;
pub mod secrets;

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use salesboy_protocol::whatsapp::signature::{SIGNATURE_HEADER, sign};
use salesboy_protocol::{ChatId, Engine, TenantId};
use serde_json::{Value, json};

/// The file in the data dir that holds the generated admin token (defined by [`crate::run`],
/// which writes it).
pub use crate::run::ADMIN_TOKEN_FILE;
pub use client::AdminClient;

use crate::config::Config;

/// Where the node is: shared by every command that talks to the admin API.
#[derive(Debug, Clone, Default, Args)]
pub struct Target {
    /// The node's base URL [default: http:// + the configured http_addr].
    #[arg(long, value_name = "URL", global = true)]
    pub url: Option<String>,
    /// The node's TOML configuration file, for its http_addr, data_dir and admin_token.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

impl Target {
    /// A client of the node this target designates.
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let config = Config::load(self.config.as_deref())?;
        AdminClient::from_config(&config, self.url.as_deref())
    }
}

/// `salesboy tenant …`
#[derive(Debug, Clone, Subcommand)]
pub enum TenantCommand {
    /// Create or update a tenant and attach its WhatsApp number.
    Add {
        /// The tenant's id (letters, digits, '_' and '-').
        #[arg(long)]
        id: String,
        /// How its number is reached: `cloud_api` (needs --phone-number-id and
        /// --access-token) or `web` (linked later with `tenant pair` or `tenant pair-code`)
        /// [default: cloud_api].
        #[arg(long, value_name = "ENGINE")]
        engine: Option<Engine>,
        /// `cloud_api`: Meta's phone number id of the business number.
        #[arg(long, value_name = "DIGITS")]
        phone_number_id: Option<String>,
        /// `cloud_api`: the number's access token; `-` reads it from standard input.
        #[arg(long, value_name = "TOKEN")]
        access_token: Option<String>,
        /// Display name of the business [default: the id].
        #[arg(long)]
        name: Option<String>,
        /// The assistant's system prompt.
        #[arg(long, value_name = "TEXT")]
        system_prompt: Option<String>,
        /// A JSON file with the LLM provider list (see docs/api.md).
        #[arg(long, value_name = "FILE.json")]
        llm: Option<PathBuf>,
        /// The WhatsApp Business Account id.
        #[arg(long, value_name = "ID")]
        waba_id: Option<String>,
        /// When its customers' messages are marked read with the typing indicator:
        /// `always`, `when_slow` (only before an LLM is asked) or `never` [default: the
        /// node's SALESBOY_WHATSAPP_READ_RECEIPTS].
        #[arg(long, value_name = "POLICY", value_parser = ["always", "when_slow", "never"])]
        read_receipts: Option<String>,
    },
    /// Show a tenant with the live state of its actors.
    Show {
        /// The tenant's id.
        id: String,
    },
    /// List every tenant.
    List,
    /// `web`: show the QR code that links the tenant's number (scan it in WhatsApp,
    /// Linked devices); prints it in the terminal.
    Pair {
        /// The tenant's id.
        id: String,
    },
    /// `web`: get an 8-character code that links the tenant's number to the account of
    /// PHONE (typed on that phone: Linked devices, Link with phone number instead).
    PairCode {
        /// The tenant's id.
        id: String,
        /// The account's phone number, international format (`+234 801 234 5678`).
        phone: String,
    },
    /// `web`: unlink the tenant's device (pairing again is needed).
    Logout {
        /// The tenant's id.
        id: String,
    },
}

/// `salesboy kb …`
#[derive(Debug, Clone, Subcommand)]
pub enum KbCommand {
    /// Add a text file to a tenant's knowledge base.
    Add {
        /// The tenant's id.
        tenant: String,
        /// A UTF-8 text (or Markdown) file.
        file: PathBuf,
        /// The document's title [default: the file name].
        #[arg(long)]
        title: Option<String>,
    },
    /// List a tenant's knowledge documents.
    List {
        /// The tenant's id.
        tenant: String,
    },
    /// Delete a knowledge document.
    Delete {
        /// The tenant's id.
        tenant: String,
        /// The document's id (see `kb list`).
        document_id: i64,
    },
}

/// `salesboy chat …`
#[derive(Debug, Clone, Subcommand)]
pub enum ChatCommand {
    /// Pause the bot in a chat, for some minutes or until resumed.
    Pause {
        /// The tenant's id.
        tenant: String,
        /// The customer's WhatsApp id.
        wa_id: String,
        /// How long [default: until `chat resume`].
        #[arg(long)]
        minutes: Option<u32>,
    },
    /// Let the bot answer in a chat again.
    Resume {
        /// The tenant's id.
        tenant: String,
        /// The customer's WhatsApp id.
        wa_id: String,
    },
    /// Send a message as the business owner; the bot steps back in that chat for a while.
    Send {
        /// The tenant's id.
        tenant: String,
        /// The customer's WhatsApp id.
        wa_id: String,
        /// The text.
        text: String,
    },
    /// Show a chat's last messages.
    Messages {
        /// The tenant's id.
        tenant: String,
        /// The customer's WhatsApp id.
        wa_id: String,
        /// How many, 1 to 1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// `salesboy dev …`
#[derive(Debug, Clone, Subcommand)]
pub enum DevCommand {
    /// Print the X-Hub-Signature-256 header Meta would send with a webhook body.
    SignWebhook {
        /// The exact body bytes to sign.
        file: PathBuf,
        /// The Meta app secret.
        #[arg(
            long,
            env = "SALESBOY_WHATSAPP_APP_SECRET",
            hide_env_values = true,
            value_name = "SECRET"
        )]
        secret: Option<String>,
    },
}

impl TenantCommand {
    /// Runs the command against the admin API; returns the API's answer.
    pub async fn execute(self, client: &AdminClient) -> anyhow::Result<Value> {
        match self {
            Self::Add {
                id,
                engine,
                phone_number_id,
                access_token,
                name,
                system_prompt,
                llm,
                waba_id,
                read_receipts,
            } => {
                let access_token = match access_token.as_deref() {
                    Some("-") => Some(
                        read_stdin_line()
                            .context("reading the access token from standard input")?,
                    ),
                    _ => access_token,
                };
                let mut body = json!({"id": id});
                if let Some(engine) = engine {
                    body["engine"] = Value::String(engine.to_string());
                }
                let fields = [
                    ("phone_number_id", phone_number_id),
                    ("access_token", access_token),
                    ("name", name),
                    ("system_prompt", system_prompt),
                    ("waba_id", waba_id),
                    ("read_receipts", read_receipts),
                ];
                for (field, value) in fields {
                    if let Some(value) = value {
                        body[field] = Value::String(value);
                    }
                }
                if let Some(path) = llm {
                    body["llm"] = read_json(&path)?;
                }
                client.post("/api/tenants", &body).await
            }
            Self::Show { id } => {
                client
                    .get(&format!("/api/tenants/{}", tenant_id(&id)?))
                    .await
            }
            Self::List => client.get("/api/tenants").await,
            Self::Pair { id } => {
                let path = format!("/api/tenants/{}/session/qr", tenant_id(&id)?);
                client.get(&path).await
            }
            Self::PairCode { id, phone } => {
                let path = format!("/api/tenants/{}/session/pair_code", tenant_id(&id)?);
                client.post(&path, &json!({"phone": phone})).await
            }
            Self::Logout { id } => {
                let path = format!("/api/tenants/{}/session/logout", tenant_id(&id)?);
                client.post(&path, &json!({})).await
            }
        }
    }
}

/// A QR code drawn with block characters, to scan from a terminal (dark on light).
pub fn terminal_qr(text: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).context("drawing the QR code")?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build())
}

impl KbCommand {
    /// Runs the command against the admin API; returns the API's answer.
    pub async fn execute(self, client: &AdminClient) -> anyhow::Result<Value> {
        match self {
            Self::Add {
                tenant: id,
                file,
                title,
            } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {} (a UTF-8 text file)", file.display()))?;
                let title = match title {
                    Some(title) => title,
                    None => file_name(&file)?,
                };
                let path = format!("/api/tenants/{}/knowledge", tenant_id(&id)?);
                client
                    .post(&path, &json!({"title": title, "text": text}))
                    .await
            }
            Self::List { tenant: id } => {
                client
                    .get(&format!("/api/tenants/{}/knowledge", tenant_id(&id)?))
                    .await
            }
            Self::Delete {
                tenant: id,
                document_id,
            } => {
                let path = format!("/api/tenants/{}/knowledge/{document_id}", tenant_id(&id)?);
                client.delete(&path).await
            }
        }
    }
}

impl ChatCommand {
    /// Runs the command against the admin API; returns the API's answer.
    pub async fn execute(self, client: &AdminClient) -> anyhow::Result<Value> {
        match self {
            Self::Pause {
                tenant: id,
                wa_id,
                minutes,
            } => {
                let body = match minutes {
                    Some(minutes) => json!({ "minutes": minutes }),
                    None => json!({}),
                };
                client
                    .post(&conversation(&id, &wa_id, "pause")?, &body)
                    .await
            }
            Self::Resume { tenant: id, wa_id } => {
                client
                    .post(&conversation(&id, &wa_id, "resume")?, &json!({}))
                    .await
            }
            Self::Send {
                tenant: id,
                wa_id,
                text,
            } => {
                let path = conversation(&id, &wa_id, "send")?;
                client.post(&path, &json!({ "text": text })).await
            }
            Self::Messages {
                tenant: id,
                wa_id,
                limit,
            } => {
                let path = conversation(&id, &wa_id, "messages")?;
                client.get(&format!("{path}?limit={limit}")).await
            }
        }
    }
}

impl DevCommand {
    /// Runs the command; returns the line to print.
    pub async fn execute(self) -> anyhow::Result<String> {
        match self {
            Self::SignWebhook { file, secret } => {
                let secret = secret
                    .filter(|s| !s.is_empty())
                    .context("no app secret: pass --secret or set SALESBOY_WHATSAPP_APP_SECRET")?;
                let body =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                Ok(format!(
                    "{SIGNATURE_HEADER}: {}",
                    sign(secret.as_bytes(), &body)
                ))
            }
        }
    }
}

/// `salesboy tenant …`: runs the command and prints the answer.
pub async fn tenant(target: &Target, command: TenantCommand) -> anyhow::Result<()> {
    let pairing = matches!(command, TenantCommand::Pair { .. });
    let answer = command.execute(&target.client()?).await?;
    if pairing && let Some(qr) = answer["qr"].as_str() {
        println!("{}", terminal_qr(qr)?);
        println!(
            "Scan it in WhatsApp: Settings, Linked devices, Link a device. It is replaced in \
             a minute or less: run `tenant pair` again for the next one."
        );
        return Ok(());
    }
    print_json(&answer)
}

/// `salesboy kb …`: runs the command and prints the answer.
pub async fn kb(target: &Target, command: KbCommand) -> anyhow::Result<()> {
    print_json(&command.execute(&target.client()?).await?)
}

/// `salesboy chat …`: runs the command and prints the answer.
pub async fn chat(target: &Target, command: ChatCommand) -> anyhow::Result<()> {
    print_json(&command.execute(&target.client()?).await?)
}

/// `salesboy dev …`: runs the command and prints its output.
pub async fn dev(command: DevCommand) -> anyhow::Result<()> {
    let output = command.execute().await?;
    if !output.is_empty() {
        println!("{output}");
    }
    Ok(())
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A tenant id checked before it goes into a URL path.
fn tenant_id(id: &str) -> anyhow::Result<TenantId> {
    TenantId::new(id).map_err(|e| anyhow::anyhow!("tenant: {e}"))
}

/// `/api/tenants/{tenant}/conversations/{wa_id}/{action}`, both ids checked.
fn conversation(id: &str, wa_id: &str, action: &str) -> anyhow::Result<String> {
    let chat = ChatId::new(wa_id).map_err(|e| anyhow::anyhow!("wa_id: {e}"))?;
    Ok(format!(
        "/api/tenants/{}/conversations/{chat}/{action}",
        tenant_id(id)?
    ))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no file name: pass --title", path.display()))
}

fn read_stdin_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim().to_owned();
    anyhow::ensure!(!line.is_empty(), "standard input was empty");
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `salesboy tenant …` alone, to parse its arguments.
    #[derive(Debug, Parser)]
    struct Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    }

    #[test]
    fn a_tenant_s_read_receipt_policy_is_one_of_three() {
        let parse = |policy: &str| {
            Tenant::try_parse_from(["tenant", "add", "--id", "acme", "--read-receipts", policy])
        };
        let parsed = parse("when_slow").expect("a policy");
        assert!(
            matches!(parsed.command, TenantCommand::Add { read_receipts: Some(ref p), .. } if p == "when_slow"),
            "{parsed:?}"
        );
        let refused = parse("sometimes").expect_err("not a policy").to_string();
        assert!(
            refused.contains("sometimes") && refused.contains("always, when_slow, never"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn sign_webhook_prints_the_header_meta_would_send() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("body.json");
        std::fs::write(&file, br#"{"object":"whatsapp_business_account"}"#).unwrap();
        let line = DevCommand::SignWebhook {
            file: file.clone(),
            secret: Some("app-secret".into()),
        }
        .execute()
        .await
        .unwrap();
        let expected = sign(b"app-secret", br#"{"object":"whatsapp_business_account"}"#);
        assert_eq!(line, format!("X-Hub-Signature-256: {expected}"));
        assert!(expected.starts_with("sha256=") && expected.len() == 7 + 64);

        let err = DevCommand::SignWebhook { file, secret: None }
            .execute()
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("SALESBOY_WHATSAPP_APP_SECRET"),
            "{err}"
        );
    }

    #[test]
    fn ids_are_checked_before_they_reach_a_url() {
        assert_eq!(
            conversation("acme", "15551234567", "pause").unwrap(),
            "/api/tenants/acme/conversations/15551234567/pause"
        );
        let err = conversation("acme/../x", "1", "send")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("tenant: tenant id contains '/'"), "{err}");
        let err = conversation("acme", "1 2", "send").unwrap_err().to_string();
        assert!(err.starts_with("wa_id: chat id contains ' '"), "{err}");
    }

    #[test]
    fn titles_default_to_the_file_name() {
        assert_eq!(file_name(Path::new("/docs/faq.md")).unwrap(), "faq.md");
        assert!(file_name(Path::new("/")).is_err());
    }
}
