//! The enrolment QR code: in the terminal, as PNG, as SVG.

use super::CliError;
use qrcode::render::{svg, unicode::Dense1x2};
use qrcode::{EcLevel, QrCode};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

fn code(uri: &str) -> Result<QrCode, CliError> {
    QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)
        .map_err(|e| CliError::Refused(format!("cannot draw the QR code: {e}")))
}

/// The QR code in Unicode half blocks, two modules per character cell, with
/// its quiet zone. With `force_colours` every line is drawn black on white
/// (ANSI), so a phone scans it from a dark or a light terminal alike.
pub fn terminal(uri: &str, force_colours: bool) -> Result<String, CliError> {
    let art = code(uri)?
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Dark)
        .light_color(Dense1x2::Light)
        .quiet_zone(true)
        .build();
    if !force_colours {
        return Ok(art);
    }
    Ok(art
        .lines()
        .map(|line| format!("\x1b[30;107m{line}\x1b[0m\n"))
        .collect())
}

/// Refuses `path` if anything is there, even a dangling symbolic link: the
/// QR code holds the secret, and is only ever written to a new file.
/// Checked before the enrolment is asked for, so that a refusal changes
/// nothing; [`write_private`] enforces it again as it creates the file.
pub fn refuse_existing(path: &Path) -> Result<(), CliError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Err(exists(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CliError::Usage(format!(
            "cannot use {}: {e}",
            path.display()
        ))),
    }
}

fn exists(path: &Path) -> CliError {
    CliError::Usage(format!(
        "{} exists already: the QR code holds the secret and is only written to a new file \
         (otpd never writes into or through an existing file or link); choose a new name, \
         or remove it first",
        path.display()
    ))
}

/// Creates `path` new with mode 0600 (it contains the secret) and writes
/// `bytes`: `O_CREAT|O_EXCL` (nothing at the path, not even a link, is
/// opened) and `O_NOFOLLOW`.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let fail =
        |e: std::io::Error| CliError::Refused(format!("cannot write {}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => exists(path),
            _ => fail(e),
        })?;
    // The umask may have taken bits away, never added any: 0600 exactly.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Writes the QR code as a PNG (mode 0600).
pub fn png(uri: &str, path: &Path) -> Result<(), CliError> {
    let image = code(uri)?
        .render::<image::Luma<u8>>()
        .min_dimensions(320, 320)
        .build();
    let mut bytes = Vec::new();
    image::DynamicImage::ImageLuma8(image)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| CliError::Refused(format!("cannot encode the PNG: {e}")))?;
    write_private(path, &bytes)
}

/// Writes the QR code as an SVG (mode 0600).
pub fn svg(uri: &str, path: &Path) -> Result<(), CliError> {
    let text = code(uri)?
        .render::<svg::Color<'_>>()
        .min_dimensions(320, 320)
        .build();
    write_private(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_art_keeps_the_quiet_zone_and_forces_colours() {
        let plain = terminal("otpauth://totp/h:a?secret=AAAA&issuer=h", false).unwrap();
        let first = plain.lines().next().unwrap();
        // The quiet zone: the top rows are blank.
        assert!(first.chars().all(|c| c == ' '), "{first:?}");
        assert!(plain.contains('█') || plain.contains('▀'));
        let coloured = terminal("otpauth://totp/h:a?secret=AAAA&issuer=h", true).unwrap();
        assert!(coloured
            .lines()
            .all(|l| l.starts_with("\x1b[30;107m") && l.ends_with("\x1b[0m")));
    }

    #[test]
    fn files_are_private_and_new() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("qr.png");
        std::fs::write(&p, b"old").unwrap();
        let e = png("otpauth://totp/h:a?secret=AAAA&issuer=h", &p).unwrap_err();
        assert!(e.to_string().contains("exists already"), "{e}");
        assert!(refuse_existing(&p).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        assert!(refuse_existing(&link).is_err());
        assert!(png("otpauth://totp/h:a?secret=AAAA&issuer=h", &link).is_err());
        assert!(!dir.path().join("nowhere").exists());
        std::fs::remove_file(&p).unwrap();
        refuse_existing(&p).unwrap();
        png("otpauth://totp/h:a?secret=AAAA&issuer=h", &p).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(std::fs::read(&p).unwrap().starts_with(b"\x89PNG"));
        let s = dir.path().join("qr.svg");
        svg("otpauth://totp/h:a?secret=AAAA&issuer=h", &s).unwrap();
        assert!(std::fs::read_to_string(&s).unwrap().contains("<svg"));
    }
}
