//! Secrets at rest: AES-256-GCM under the operator's master key (`master_key` /
//! `TESSERA_MASTER_KEY`, or `master_key_file`), for the private signing keys in the database.
//!
//! Sealed form: `TSK1` ‖ 96-bit random nonce ‖ ciphertext ‖ 128-bit tag. The associated data is
//! the key's `kid`, so a sealed private key moved to another row does not open. A stored key
//! that does not start with `TSK1` is a plain PKCS#8 document (written before a master key was
//! set, or with none); it is sealed at the next start that has a master key.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

const MAGIC: &[u8] = b"TSK1";

/// The master key. Its `Debug` shows nothing of it.
pub struct MasterKey(LessSafeKey);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// From its configured text: 32 bytes in base64 (standard or URL-safe, padded or not).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| "must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)")?;
        if bytes.len() != 32 {
            return Err("must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)");
        }
        let key =
            UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "is not a usable AES-256 key")?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// Seals `plain`, bound to `context` (the kid).
    pub fn seal(&self, plain: &[u8], context: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError)?;
        let mut body = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut body,
            )
            .map_err(|_| SealError)?;
        let mut sealed = Vec::with_capacity(MAGIC.len() + NONCE_LEN + body.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Opens what [`MasterKey::seal`] made for the same `context`; `None` when the key is
    /// wrong, the data was altered, or it belongs to another context.
    pub fn open(&self, sealed: &[u8], context: &str) -> Option<Vec<u8>> {
        let rest = sealed.strip_prefix(MAGIC)?;
        let (nonce, body) = rest.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// Whether `stored` is in the sealed form (as opposed to a plain PKCS#8 document).
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

#[derive(Debug, thiserror::Error)]
#[error("sealing a secret failed")]
pub struct SealError;

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 ASCII bytes

    #[test]
    fn seals_opens_and_refuses_the_wrong_key_context_or_tampering() {
        let key = MasterKey::parse(KEY).unwrap();
        let sealed = key.seal(b"private key", "kid-1").unwrap();
        assert!(is_sealed(&sealed));
        assert!(
            !sealed.windows(11).any(|w| w == b"private key"),
            "no plaintext"
        );
        assert_eq!(key.open(&sealed, "kid-1").unwrap(), b"private key");
        assert!(key.open(&sealed, "kid-2").is_none(), "bound to its kid");
        let other = MasterKey::parse(&STANDARD.encode([7u8; 32])).unwrap();
        assert!(other.open(&sealed, "kid-1").is_none(), "wrong master key");
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(key.open(&altered, "kid-1").is_none(), "tampered");
        assert_ne!(
            key.seal(b"private key", "kid-1").unwrap(),
            sealed,
            "fresh nonce"
        );
    }

    #[test]
    fn only_32_byte_base64_keys_are_accepted() {
        assert!(MasterKey::parse(KEY).is_ok());
        assert!(MasterKey::parse(&URL_SAFE_NO_PAD.encode([1u8; 32])).is_ok());
        assert!(MasterKey::parse("c2hvcnQ=").is_err());
        assert!(MasterKey::parse("not base64 at all!").is_err());
        assert!(format!("{:?}", MasterKey::parse(KEY).unwrap()).contains("redacted"));
    }
}
