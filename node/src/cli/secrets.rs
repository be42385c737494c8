//! `salesboy secrets …`: keys for secrets at rest ([`crate::secrets`]), and their rotation.
//!
//! These commands open the database themselves (the node's configuration says which, and
//! with which keys); they do not go through a running node.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use crate::config::Config;
use crate::secrets::files::{create_private, protect_sqlite_files};
use crate::secrets::keys::read_or_create_key_file;
use crate::secrets::{KeySource, SecretsKey, keyring_for};
use crate::store::{ColumnReport, SqlStore, redact_url};

/// `salesboy secrets …`
#[derive(Debug, Clone, Subcommand)]
pub enum SecretsCommand {
    /// Encrypt every stored secret again, under a new key or the configured one, in one
    /// transaction (docs/security.md, "Rotating the secrets key").
    Rotate {
        /// The node's TOML configuration file (database_url and the secrets keys).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The new key's file, made (mode 0600) when it does not exist. Without it the
        /// configured secrets_key encrypts what is under secrets_previous_key or in the clear.
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
    },
    /// Make a new secrets key into FILE (mode 0600; an existing file is left alone).
    GenerateKey {
        /// Where to write it.
        file: PathBuf,
    },
}

/// Runs a `secrets` command, printing what it does.
pub async fn secrets(command: SecretsCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    match command {
        SecretsCommand::Rotate {
            config,
            new_key_file,
        } => {
            let config = Config::load(config.as_deref())?;
            rotate(&config, new_key_file.as_deref(), &mut out).await?;
        }
        SecretsCommand::GenerateKey { file } => {
            let key = SecretsKey::generate();
            let created = create_private(&file, &key.to_base64())
                .with_context(|| format!("writing {}", file.display()))?;
            anyhow::ensure!(created, "{} exists: not overwritten", file.display());
            writeln!(
                out,
                "secrets key {} written to {}",
                key.id(),
                file.display()
            )?;
        }
    }
    Ok(())
}

/// Encrypts every secret of `config`'s database under the key in `new_key_file` (made when
/// missing) or, without one, under the configured key; the old keys open what they sealed.
/// Progress and a summary go to `out`; answers what was done to each column.
pub async fn rotate(
    config: &Config,
    new_key_file: Option<&Path>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Vec<ColumnReport>> {
    let url = config.effective_database_url();
    protect_sqlite_files(&url).context("making the sqlite files private (0600)")?;
    let (mut keys, source) = keyring_for(config, &url).context("loading the secrets keys")?;
    let old_id = keys.current().id().to_owned();
    if let Some(path) = new_key_file {
        let (new, created) = read_or_create_key_file(path)?;
        if created {
            writeln!(
                out,
                "new secrets key {} made in {}",
                new.id(),
                path.display()
            )?;
        }
        keys = keys.rotated_to(new);
    }
    let new_id = keys.current().id().to_owned();
    writeln!(
        out,
        "encrypting the secrets of {} under key {new_id} (key {old_id} and any previous key still decrypt)",
        redact_url(&url)
    )?;
    let sql = SqlStore::connect(&url)
        .await
        .context("opening the database")?
        .with_secrets(keys);
    let mut progress = |step: crate::store::ResealProgress| {
        let _ = writeln!(out, "  {}: {}/{}", step.column, step.done, step.rows);
    };
    let reports = sql.rotate_secrets(&mut progress).await;
    sql.close().await;
    let reports = reports.context("re-encrypting the secrets (nothing was changed)")?;
    summary(&reports, out)?;
    next_steps(new_key_file, &source, &old_id, out)?;
    Ok(reports)
}

fn summary(reports: &[ColumnReport], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "done, in one transaction:")?;
    for report in reports {
        writeln!(
            out,
            "  {}: {} rows, {} re-encrypted, {} were in the clear, {} already under the key{}",
            report.column,
            report.rows,
            report.resealed,
            report.sealed_plaintext,
            report.unchanged,
            if report.changed_meanwhile > 0 {
                format!(
                    ", {} changed meanwhile (run the command again)",
                    report.changed_meanwhile
                )
            } else {
                String::new()
            }
        )?;
    }
    Ok(())
}

fn next_steps(
    new_key_file: Option<&Path>,
    source: &KeySource,
    old_id: &str,
    out: &mut (dyn Write + Send),
) -> std::io::Result<()> {
    let Some(path) = new_key_file else {
        return writeln!(
            out,
            "every secret is under the configured key: secrets_previous_key(_file) is no longer needed"
        );
    };
    match source {
        KeySource::BesideDatabase(old) | KeySource::Generated(old) => writeln!(
            out,
            "next: stop the node, move {} to {} and start it again (the old key {old_id} is then \
             no longer needed)",
            path.display(),
            old.display()
        ),
        _ => writeln!(
            out,
            "next: give every node secrets_key_file = {} and the old key {old_id} as \
             secrets_previous_key(_file), and restart them (a node without the new key cannot \
             read the secrets); then the old key is no longer needed",
            path.display()
        ),
    }
}
