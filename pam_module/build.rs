//! Links `pam_otpd.so` with `-z nodelete`.
//!
//! libpam `dlclose`s a module after `pam_end`. Rust's standard library can
//! leave things behind that point into the module's text (thread-local
//! destructors registered by std, the panic machinery), so unloading it while
//! the host keeps running is undefined behaviour. NODELETE keeps the object
//! mapped until the process exits, as sudo-rs and kanidm do.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo:rerun-if-changed=build.rs");
}
