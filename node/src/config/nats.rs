//! The NATS connection's and the cluster key's settings: read from the layers and checked
//! (one authentication method, a client certificate with its key, keys that are keys).

use std::path::PathBuf;

use secrecy::SecretString;

use super::{Config, optional, set_key, set_path};

/// What the layers say about NATS authentication, TLS and the cluster key.
pub(super) struct NatsLayers {
    pub(super) nats_token: Option<String>,
    pub(super) nats_nkey_seed_file: Option<PathBuf>,
    pub(super) nats_credentials_file: Option<PathBuf>,
    pub(super) nats_tls_ca_file: Option<PathBuf>,
    pub(super) nats_tls_cert_file: Option<PathBuf>,
    pub(super) nats_tls_key_file: Option<PathBuf>,
    pub(super) cluster_key: Option<String>,
    pub(super) cluster_key_file: Option<PathBuf>,
    pub(super) cluster_previous_key: Option<String>,
    pub(super) cluster_previous_key_file: Option<PathBuf>,
}

impl Config {
    /// Sets NATS authentication, TLS and the cluster key; an error is the key and what is
    /// wrong (never the value).
    pub(super) fn apply_nats_and_cluster(
        &mut self,
        layers: NatsLayers,
    ) -> Result<(), (&'static str, String)> {
        let NatsLayers {
            nats_token,
            nats_nkey_seed_file,
            nats_credentials_file,
            nats_tls_ca_file,
            nats_tls_cert_file,
            nats_tls_key_file,
            cluster_key,
            cluster_key_file,
            cluster_previous_key,
            cluster_previous_key_file,
        } = layers;
        if nats_token.is_some() {
            self.nats_token = nats_token.and_then(optional).map(SecretString::from);
        }
        set_path(nats_nkey_seed_file, &mut self.nats_nkey_seed_file);
        set_path(nats_credentials_file, &mut self.nats_credentials_file);
        set_path(nats_tls_ca_file, &mut self.nats_tls_ca_file);
        set_path(nats_tls_cert_file, &mut self.nats_tls_cert_file);
        set_path(nats_tls_key_file, &mut self.nats_tls_key_file);
        let methods = [
            self.nats_user.is_some(),
            self.nats_token.is_some(),
            self.nats_nkey_seed_file.is_some(),
            self.nats_credentials_file.is_some(),
        ];
        if methods.iter().filter(|set| **set).count() > 1 {
            return Err((
                "nats_token",
                "set one NATS authentication: nats_user and nats_password, nats_token, \
                 nats_nkey_seed_file or nats_credentials_file"
                    .into(),
            ));
        }
        match (&self.nats_tls_cert_file, &self.nats_tls_key_file) {
            (Some(_), None) => {
                return Err(("nats_tls_cert_file", "needs nats_tls_key_file too".into()));
            }
            (None, Some(_)) => {
                return Err(("nats_tls_key_file", "needs nats_tls_cert_file too".into()));
            }
            _ => {}
        }
        set_key("cluster_key", cluster_key, &mut self.cluster_key)?;
        set_key(
            "cluster_previous_key",
            cluster_previous_key,
            &mut self.cluster_previous_key,
        )?;
        set_path(cluster_key_file, &mut self.cluster_key_file);
        set_path(
            cluster_previous_key_file,
            &mut self.cluster_previous_key_file,
        );
        super::not_both(
            ("cluster_key", &self.cluster_key),
            ("cluster_key_file", &self.cluster_key_file),
        )?;
        super::not_both(
            ("cluster_previous_key", &self.cluster_previous_key),
            ("cluster_previous_key_file", &self.cluster_previous_key_file),
        )
    }
}
