//! The key directory: `<name>.key` holds a service's private Ed25519 key (PKCS#8 PEM,
//! mode 0600), `<name>.pub` its public key (SubjectPublicKeyInfo PEM, as `openssl pkey
//! -pubout` writes). A process loads the private keys of the services it runs and the
//! public keys of every service; in the dev stack and the cluster each container gets its
//! own `.key` and every `.pub` from a secret, in the all-in-one the whole set is generated
//! into the data directory on first start (`microchat admin service-keys DIR` makes one
//! for a deployment).

use super::{Service, token::Identity};
use crate::token::Signer;
use jsonwebtoken::DecodingKey;
use ring::{rand::SystemRandom, signature::Ed25519KeyPair};
use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Where a process finds the service keys.
#[derive(Debug, Clone, clap::Args)]
pub struct KeysConfig {
    /// Directory of the service keys: this service's `<name>.key` and every service's
    /// `<name>.pub` (`microchat admin service-keys DIR` generates a set).
    #[arg(
        long = "service-keys",
        value_name = "DIR",
        env = "MICROCHAT_SERVICE_KEYS",
        default_value = "./data/service-keys"
    )]
    pub dir: PathBuf,
}

/// Why the service keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("service key file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A key file holds something else than an Ed25519 key in the expected PEM form.
    #[error("service key file {0} is not an Ed25519 key in PEM (PKCS#8 private, SPKI public)")]
    Format(String),
    /// A service's private and public key files hold halves of different keys.
    #[error(
        "{service}.key and {service}.pub in {dir} are not one key pair: replace both from one \
         generated set"
    )]
    Mismatch {
        /// The service.
        service: Service,
        /// The key directory.
        dir: String,
    },
    /// This process runs a service whose private key is not in the directory.
    #[error(
        "no private key for the {service} service in {dir}: give the service its `{service}.key` \
         (generate a set with `microchat admin service-keys DIR`)"
    )]
    Missing {
        /// The service.
        service: Service,
        /// The key directory.
        dir: String,
    },
}

/// The keys one process holds: private keys of the services it runs, public keys of
/// every service it accepts calls from.
#[derive(Clone)]
pub struct ServiceKeys {
    dir: PathBuf,
    private: HashMap<Service, Arc<Identity>>,
    public: Arc<HashMap<Service, DecodingKey>>,
}

impl std::fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        f.debug_struct("ServiceKeys")
            .field("dir", &self.dir)
            .field("private", &self.private.keys().collect::<Vec<_>>())
            .field("public", &self.public.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ServiceKeys {
    /// Creates the key pairs missing from `dir` (the directory too, mode 0700), so every
    /// service has both files; existing keys are kept.
    pub fn generate_missing(dir: &Path) -> Result<(), KeyError> {
        let file_error = |path: &Path| {
            let path = path.display().to_string();
            move |source| KeyError::File { path, source }
        };
        std::fs::create_dir_all(dir).map_err(file_error(dir))?;
        restrict(dir, 0o700).map_err(file_error(dir))?;
        for service in Service::ALL {
            let private = dir.join(format!("{service}.key"));
            let (pair, fresh) = match std::fs::read_to_string(&private) {
                Ok(text) => (
                    parse_private(&text, service).ok_or_else(|| format_error(&private))?,
                    false,
                ),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                        .expect("the system random generator is available");
                    let text = pem::encode(&pem::Pem::new("PRIVATE KEY", document.as_ref()));
                    write_new(&private, &text, 0o600).map_err(file_error(&private))?;
                    let pair =
                        parse_private(&text, service).expect("a freshly generated key parses");
                    (pair, true)
                }
                Err(error) => return Err(file_error(&private)(error)),
            };
            // A new private key replaces whatever public key was there: it belonged to
            // another key.
            let public = dir.join(format!("{service}.pub"));
            if fresh || !public.exists() {
                let der = [&ED25519_SPKI_PREFIX[..], pair.1.as_slice()].concat();
                let text = pem::encode(&pem::Pem::new("PUBLIC KEY", der));
                write_new(&public, &text, 0o644).map_err(file_error(&public))?;
            }
        }
        Ok(())
    }

    /// Every service's keys from `dir`, generating what is missing first: for a process
    /// that runs (or plays) every service — the all-in-one, tests.
    pub fn open_full_set(dir: &Path) -> Result<Self, KeyError> {
        Self::generate_missing(dir)?;
        Self::load(dir, &Service::ALL)
    }

    /// Loads every key in `dir`: the private keys present and every public key. It
    /// fails unless the private key of each of `runs` is there.
    pub fn load(dir: &Path, runs: &[Service]) -> Result<Self, KeyError> {
        let mut private = HashMap::new();
        let mut public = HashMap::new();
        for service in Service::ALL {
            let key_file = dir.join(format!("{service}.key"));
            let pub_file = dir.join(format!("{service}.pub"));
            let own = match read_if_present(&key_file)? {
                Some(text) => {
                    Some(parse_private(&text, service).ok_or_else(|| format_error(&key_file))?)
                }
                None => None,
            };
            let raw = match read_if_present(&pub_file)? {
                Some(text) => Some(parse_public(&text).ok_or_else(|| format_error(&pub_file))?),
                None => None,
            };
            // Two halves of different keys: every call this service makes would be
            // refused, so it is refused at start instead, naming the files.
            if let (Some((_, own_public)), Some(raw)) = (&own, &raw)
                && own_public != raw
            {
                return Err(KeyError::Mismatch {
                    service,
                    dir: dir.display().to_string(),
                });
            }
            if let Some((signer, _)) = own {
                private.insert(service, Arc::new(Identity::new(service, signer)));
            }
            if let Some(raw) = raw {
                public.insert(service, DecodingKey::from_ed_der(&raw));
            }
        }
        if let Some(&service) = runs.iter().find(|service| !private.contains_key(service)) {
            return Err(KeyError::Missing {
                service,
                dir: dir.display().to_string(),
            });
        }
        Ok(Self {
            dir: dir.to_owned(),
            private,
            public: Arc::new(public),
        })
    }

    /// The identity `service` signs its calls with (one of the services this process runs).
    pub fn identity(&self, service: Service) -> Result<Arc<Identity>, KeyError> {
        self.private
            .get(&service)
            .cloned()
            .ok_or_else(|| KeyError::Missing {
                service,
                dir: self.dir.display().to_string(),
            })
    }

    /// The public keys of the services this process trusts.
    pub(crate) fn trusted(&self) -> Arc<HashMap<Service, DecodingKey>> {
        Arc::clone(&self.public)
    }
}

/// A private key's signer (its key id `service`) and its raw 32-byte public half.
fn parse_private(text: &str, service: Service) -> Option<(Signer, Vec<u8>)> {
    let block = pem::parse(text.trim()).ok()?;
    if block.tag() != "PRIVATE KEY" {
        return None;
    }
    let pair = Ed25519KeyPair::from_pkcs8(block.contents()).ok()?;
    let signer = Signer::new(pair, service.name());
    let public = signer.public_key().to_vec();
    Some((signer, public))
}

/// The raw 32-byte key of an Ed25519 SubjectPublicKeyInfo PEM.
fn parse_public(text: &str) -> Option<Vec<u8>> {
    let block = pem::parse(text.trim()).ok()?;
    let raw = block.contents().strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    (block.tag() == "PUBLIC KEY" && raw.len() == 32).then(|| raw.to_vec())
}

fn format_error(path: &Path) -> KeyError {
    KeyError::Format(path.display().to_string())
}

fn read_if_present(path: &Path) -> Result<Option<String>, KeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeyError::File {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Writes `text` to a new file at `path` through a temporary file renamed into place, so
/// a crash leaves either no key or a whole one.
fn write_new(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let mut file = options.open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("service-keys-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn a_generated_set_loads_and_is_kept_on_the_next_start() {
        let dir = temp_dir();
        ServiceKeys::generate_missing(&dir).expect("generated");
        let first = std::fs::read_to_string(dir.join("chat.key")).expect("chat.key written");
        ServiceKeys::generate_missing(&dir).expect("generated again");
        assert_eq!(
            std::fs::read_to_string(dir.join("chat.key")).expect("chat.key kept"),
            first
        );
        let keys = ServiceKeys::load(&dir, &Service::ALL).expect("loads");
        assert_eq!(keys.trusted().len(), Service::ALL.len());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_service_without_its_private_key_does_not_start() {
        let dir = temp_dir();
        ServiceKeys::generate_missing(&dir).expect("generated");
        std::fs::remove_file(dir.join("broker.key")).expect("removed");
        let error = ServiceKeys::load(&dir, &[Service::Broker]).expect_err("refused");
        assert!(matches!(
            error,
            KeyError::Missing {
                service: Service::Broker,
                ..
            }
        ));
        // The others still load, and the broker's public key is still trusted.
        let keys = ServiceKeys::load(&dir, &[Service::Chat]).expect("chat loads");
        assert!(keys.trusted().contains_key(&Service::Broker));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_damaged_key_file_is_named() {
        let dir = temp_dir();
        ServiceKeys::generate_missing(&dir).expect("generated");
        std::fs::write(dir.join("mail.pub"), "not a key").expect("overwritten");
        let error = ServiceKeys::load(&dir, &[]).expect_err("refused");
        assert!(error.to_string().contains("mail.pub"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn halves_of_different_keys_are_refused_and_a_new_key_gets_its_own_public_half() {
        let (dir, other) = (temp_dir(), temp_dir());
        ServiceKeys::generate_missing(&dir).expect("generated");
        ServiceKeys::generate_missing(&other).expect("generated");
        std::fs::copy(other.join("chat.pub"), dir.join("chat.pub")).expect("copied");
        let error = ServiceKeys::load(&dir, &[]).expect_err("refused");
        assert!(
            matches!(
                error,
                KeyError::Mismatch {
                    service: Service::Chat,
                    ..
                }
            ),
            "{error}"
        );
        // A private key generated next to a stale public one replaces it.
        std::fs::remove_file(dir.join("chat.key")).expect("removed");
        ServiceKeys::generate_missing(&dir).expect("generated again");
        ServiceKeys::load(&dir, &Service::ALL).expect("one pair again");
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(other);
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir();
        ServiceKeys::generate_missing(&dir).expect("generated");
        let mode = std::fs::metadata(dir.join("auth.key"))
            .expect("auth.key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(dir);
    }
}
