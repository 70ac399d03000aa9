//! Password hashing with argon2id. Hashing is deliberately slow, so it runs on the blocking pool,
//! and a semaphore keeps a burst of sign-ups from starting more hashes than there are cores
//! (each one takes about 19 MiB).

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use common::ApiError;
use tokio::sync::{OnceCell, Semaphore};

pub struct Hasher {
    permits: Arc<Semaphore>,
    /// A hash of a password nobody has, verified against when the e-mail is unknown, so that an
    /// unknown address takes as long to refuse as a wrong password.
    decoy: OnceCell<String>,
}

impl Hasher {
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            permits: Arc::new(Semaphore::new(cores)),
            decoy: OnceCell::new(),
        }
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|err| ApiError::internal(anyhow::anyhow!("hashing failed: {err}")))
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// Verifies in constant time with respect to the password; `hash` of `None` means the user
    /// does not exist, which is checked against the decoy and always fails.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        let exists = hash.is_some();
        let hash = match hash {
            Some(hash) => hash,
            None => self
                .decoy
                .get_or_try_init(|| self.hash("decoy password that nobody has".into()))
                .await?
                .clone(),
        };
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let matches = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).map_err(|err| {
                ApiError::internal(anyhow::anyhow!("stored hash unreadable: {err}"))
            })?;
            Ok::<_, ApiError>(
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await
        .map_err(ApiError::internal)??;
        Ok(exists && matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_verifies_against_its_own_hash_only() {
        let hasher = Hasher::new();
        let hash = hasher.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            hasher
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("wrong horse".into(), Some(hash))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("correct horse".into(), None).await.unwrap());
    }
}
