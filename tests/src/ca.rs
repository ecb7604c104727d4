//! [`TestCa`]: a certificate authority made by `openssl` for one test: a
//! root, intermediates under it, and server certificates for `localhost`
//! and 127.0.0.1 (the names the tests connect to: libpq's verify-full,
//! rustls, curl). Used by the PostgreSQL clusters ([`crate::postgres`]) and
//! the HTTPS pages' tests.

use crate::process;
use crate::programs::Program;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long one `openssl` run may take.
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(60);

/// Extensions for the CAs and the server certificates.
const OPENSSL_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[intermediate]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// A CA in a directory of the test's: its certificate `STEM.pem` (mode
/// 0644) and, until [`TestCa::forget_key`], its key `STEM.key`.
#[derive(Debug)]
pub struct TestCa {
    /// The directory of its files (and of what it issues).
    pub dir: PathBuf,
    /// Its certificate (PEM): what a client is told to trust, for a root.
    pub cert: PathBuf,
    key: Option<PathBuf>,
    /// The certificates from this CA up to (not including) the root, this
    /// one's first: what a server sends after its own certificate.
    chain: Vec<PathBuf>,
}

impl TestCa {
    /// A new root CA `STEM.pem` in `dir` (which must exist), named
    /// `common_name`, valid for two days.
    pub fn root(dir: &Path, stem: &str, common_name: &str) -> TestCa {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        with_config(dir, |config| {
            openssl(
                dir,
                &[
                    "req".as_ref(),
                    "-config".as_ref(),
                    config.as_os_str(),
                    "-x509".as_ref(),
                    "-newkey".as_ref(),
                    "ec".as_ref(),
                    "-pkeyopt".as_ref(),
                    "ec_paramgen_curve:P-256".as_ref(),
                    "-nodes".as_ref(),
                    "-days".as_ref(),
                    "2".as_ref(),
                    "-subj".as_ref(),
                    format!("/CN={common_name}").as_ref(),
                    "-extensions".as_ref(),
                    "ca".as_ref(),
                    "-keyout".as_ref(),
                    key.as_os_str(),
                    "-out".as_ref(),
                    cert.as_os_str(),
                ],
            );
        });
        chmod(&cert, 0o644);
        chmod(&key, 0o600);
        TestCa {
            dir: dir.to_path_buf(),
            cert,
            key: Some(key),
            chain: Vec::new(),
        }
    }

    /// A CA `STEM.pem` (in this one's directory) signed by this one, that
    /// may sign server certificates only (`pathlen:0`).
    pub fn intermediate(&self, stem: &str, common_name: &str) -> TestCa {
        let (cert, key) = self.issue(stem, &format!("/CN={common_name}"), "intermediate");
        let target = self.dir.join(format!("{stem}.pem"));
        std::fs::rename(&cert, &target).expect("name the intermediate's certificate");
        let mut chain = vec![target.clone()];
        chain.extend(self.chain.iter().cloned());
        TestCa {
            dir: self.dir.clone(),
            cert: target,
            key: Some(key),
            chain,
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1 signed by this
    /// CA, as (`STEM.crt`, `STEM.key`): the certificate file holds the
    /// server's certificate, then this CA's chain up to the root (the root
    /// left out, as servers send it); the key is mode 0600.
    pub fn issue_server(&self, stem: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue(stem, "/CN=localhost", "server");
        if !self.chain.is_empty() {
            let mut pem = std::fs::read(&cert).expect("read the server certificate");
            for link in &self.chain {
                pem.extend(std::fs::read(link).expect("read a certificate of the chain"));
            }
            std::fs::write(&cert, pem).expect("write the certificate chain");
        }
        (cert, key)
    }

    /// The certificates this CA's servers send after their own (this CA
    /// and its issuers below the root), in order.
    pub fn chain(&self) -> &[PathBuf] {
        &self.chain
    }

    /// Deletes the CA's key: nothing else may carry this CA's signature.
    pub fn forget_key(&mut self) {
        if let Some(key) = self.key.take() {
            std::fs::remove_file(&key).expect("remove the CA's key");
        }
    }

    /// A key and a certificate `STEM.crt` for `subject`, with the
    /// extensions of section `extensions`, signed by this CA.
    fn issue(&self, stem: &str, subject: &str, extensions: &str) -> (PathBuf, PathBuf) {
        let ca_key = self
            .key
            .as_ref()
            .expect("the CA's key was forgotten: it cannot sign any more");
        let key = self.dir.join(format!("{stem}.key"));
        let request = self.dir.join(format!("{stem}.csr"));
        let cert = self.dir.join(format!("{stem}.crt"));
        let serial = format!("0x{}", random_hex(16));
        with_config(&self.dir, |config| {
            openssl(
                &self.dir,
                &[
                    "req".as_ref(),
                    "-config".as_ref(),
                    config.as_os_str(),
                    "-new".as_ref(),
                    "-newkey".as_ref(),
                    "ec".as_ref(),
                    "-pkeyopt".as_ref(),
                    "ec_paramgen_curve:P-256".as_ref(),
                    "-nodes".as_ref(),
                    "-subj".as_ref(),
                    subject.as_ref(),
                    "-keyout".as_ref(),
                    key.as_os_str(),
                    "-out".as_ref(),
                    request.as_os_str(),
                ],
            );
            openssl(
                &self.dir,
                &[
                    "x509".as_ref(),
                    "-req".as_ref(),
                    "-in".as_ref(),
                    request.as_os_str(),
                    "-CA".as_ref(),
                    self.cert.as_os_str(),
                    "-CAkey".as_ref(),
                    ca_key.as_os_str(),
                    "-set_serial".as_ref(),
                    serial.as_ref(),
                    "-days".as_ref(),
                    "2".as_ref(),
                    "-extfile".as_ref(),
                    config.as_os_str(),
                    "-extensions".as_ref(),
                    extensions.as_ref(),
                    "-out".as_ref(),
                    cert.as_os_str(),
                ],
            );
        });
        std::fs::remove_file(&request).expect("remove the certificate request");
        chmod(&cert, 0o644);
        chmod(&key, 0o600);
        (cert, key)
    }
}

/// Runs `work` with [`OPENSSL_CONFIG`] written to a file in `dir`, which
/// is removed afterwards.
fn with_config(dir: &Path, work: impl FnOnce(&Path)) {
    let config = dir.join(format!("openssl-{}.cnf", random_hex(4)));
    std::fs::write(&config, OPENSSL_CONFIG).expect("write openssl.cnf");
    work(&config);
    std::fs::remove_file(&config).expect("remove openssl.cnf");
}

/// `openssl ARGS…` in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&OsStr]) {
    let mut cmd = Command::new(Program::Openssl.path());
    cmd.args(args).current_dir(dir);
    let out = process::run(cmd, b"", OPENSSL_TIMEOUT);
    assert!(out.status.success(), "openssl {args:?} failed: {out}");
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// `bytes` random bytes from /dev/urandom, in hexadecimal (serial numbers
/// must differ between the CAs' certificates; [`crate::rng`] repeats).
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
