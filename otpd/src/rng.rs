//! The one place the daemon and the CLI draw randomness (the OS RNG).
//! Everything else gets random values passed in (the pure core never draws
//! its own); clippy's `disallowed-methods` (otpd/clippy.toml) refuses
//! `getrandom::getrandom` anywhere but here.

/// The OS random generator failed (no entropy source: a broken system).
#[derive(Debug, thiserror::Error)]
#[error("the OS random generator failed: {0}")]
pub struct RngError(String);

/// Fills `bytes` from the OS RNG.
#[allow(clippy::disallowed_methods)] // the one call of the OS RNG
pub fn fill(bytes: &mut [u8]) -> Result<(), RngError> {
    getrandom::getrandom(bytes).map_err(|e| RngError(e.to_string()))
}

/// `N` random bytes from the OS RNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RngError> {
    let mut bytes = [0u8; N];
    fill(&mut bytes)?;
    Ok(bytes)
}
