//! Password hashing with argon2id. Hashing is deliberately slow and takes 19 MiB of working
//! memory, so it runs on a few threads of its own, one per core, each keeping its working memory
//! for the next hash: a burst of sign-ups queues instead of starting more hashes than there are
//! cores, and the process stays at a few dozen MiB. (Allocating the 19 MiB afresh for every hash
//! grew the allocator's heap by about that much per sign-up, past 380 MiB.)

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use std::cell::RefCell;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use tokio::sync::{OnceCell, oneshot};

type Job = Box<dyn FnOnce() + Send>;

pub struct Hasher {
    jobs: Sender<Job>,
    /// A hash of a password nobody has, verified against when the e-mail is unknown, so that an
    /// unknown address takes as long to refuse as a wrong password.
    decoy: OnceCell<String>,
}

impl Hasher {
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..cores {
            let queue = queue.clone();
            // Without a thread the queue still works on the others; with none, hashing fails
            // with a 500 rather than the service failing to start.
            let _ = std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || work(&queue));
        }
        Self {
            jobs,
            decoy: OnceCell::new(),
        }
    }

    /// Runs slow work on the hashing threads.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (done, result) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(work());
            }))
            .map_err(|_| anyhow::anyhow!("the hashing threads are gone"))?;
        result
            .await
            .map_err(|_| anyhow::anyhow!("a hashing job was lost"))
    }

    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        self.run(move || hash(password.as_bytes()))
            .await?
            .map_err(|err| anyhow::anyhow!("hashing failed: {err}"))
    }

    /// Verifies in constant time with respect to the password; `hash` of `None` means the user
    /// does not exist, which is checked against the decoy and always fails.
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        let exists = hash.is_some();
        let hash = match hash {
            Some(hash) => hash,
            None => self
                .decoy
                .get_or_try_init(|| self.hash("decoy password that nobody has".into()))
                .await?
                .clone(),
        };
        let matches = self
            .run(move || verify(password.as_bytes(), &hash))
            .await?
            .map_err(|err| anyhow::anyhow!("stored hash unreadable: {err}"))?;
        Ok(exists && matches)
    }
}

thread_local! {
    /// The hashing thread's argon2 working memory, kept from one hash to the next.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs argon2 with this thread's working memory.
fn with_memory<T>(argon2: &Argon2<'_>, work: impl FnOnce(&mut [Block]) -> T) -> T {
    MEMORY.with_borrow_mut(|memory| {
        let blocks = argon2.params().block_count();
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        work(&mut memory[..blocks])
    })
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) for a password and a fresh salt.
fn hash(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let argon2 = Argon2::default();
    let mut salt = [0u8; Salt::RECOMMENDED_LENGTH];
    rand::rng().fill_bytes(&mut salt);
    let salt = Salt::new(&salt)?;
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    with_memory(&argon2, |memory| {
        argon2.hash_password_into_with_memory(password, &salt, &mut output, memory)
    })?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params())?,
        salt: Some(salt),
        hash: Some(Output::new(&output)?),
    };
    Ok(phc.to_string())
}

/// Whether a password matches a stored PHC string, with the parameters the string names, the
/// outputs compared in constant time.
fn verify(password: &[u8], stored: &str) -> Result<bool, argon2::password_hash::Error> {
    let phc = PasswordHash::new(stored)?;
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return Ok(false);
    };
    let version = match phc.version {
        Some(version) => Version::try_from(version)?,
        None => Version::default(),
    };
    let argon2 = Argon2::new(
        Algorithm::new(phc.algorithm.as_str())?,
        version,
        Params::try_from(&phc)?,
    );
    let mut output = vec![0u8; expected.len()];
    with_memory(&argon2, |memory| {
        argon2.hash_password_into_with_memory(password, salt, &mut output, memory)
    })?;
    Ok(Output::new(&output)? == *expected)
}

/// One hashing thread: takes jobs until the hasher is dropped.
fn work(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A panicking job drops its reply (a 500 for that request) but keeps the thread.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
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

    #[test]
    fn hashes_read_and_written_by_the_argon2_crate_itself_agree() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};

        // A hash stored by an earlier release, made with the crate's own hasher and other
        // parameters, still verifies.
        let theirs = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 3, 1, None).unwrap(),
        )
        .hash_password(b"correct horse")
        .unwrap()
        .to_string();
        assert!(verify(b"correct horse", &theirs).unwrap());
        assert!(!verify(b"wrong horse", &theirs).unwrap());

        // Ours is a standard PHC string the crate verifies.
        let ours = hash(b"correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(hash(b"correct horse").unwrap() != ours, "salts must differ");
    }

    #[test]
    fn a_garbled_stored_hash_is_an_error_not_a_match() {
        assert!(verify(b"correct horse", "$argon2id$v=19$nonsense").is_err());
    }
}
