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

/// Writes `bytes` to `path` with mode 0600 (it contains the secret).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let fail =
        |e: std::io::Error| CliError::Refused(format!("cannot write {}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    // An existing file keeps its old mode on open: tighten it first.
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
    fn files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("qr.png");
        std::fs::write(&p, b"old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        png("otpauth://totp/h:a?secret=AAAA&issuer=h", &p).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(std::fs::read(&p).unwrap().starts_with(b"\x89PNG"));
        let s = dir.path().join("qr.svg");
        svg("otpauth://totp/h:a?secret=AAAA&issuer=h", &s).unwrap();
        assert!(std::fs::read_to_string(&s).unwrap().contains("<svg"));
    }
}
