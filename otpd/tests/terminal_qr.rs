//! The QR code drawn in the terminal must scan: its half blocks are turned
//! back into pixels exactly as a terminal would show them (black ink on
//! white, the forced colours) and decoded by an independent reader, zbarimg.

use std::process::Command;

// The skip rule of every test (under CI a missing program fails the test).
#[path = "../../tests/src/ci.rs"]
mod ci;

const URI: &str = "otpauth://totp/Acme:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Acme";

fn zbarimg_available() -> bool {
    let found = Command::new("zbarimg").arg("--version").output().is_ok();
    if !found {
        ci::skip(
            "terminal_qr",
            "zbarimg not installed (apt-get install zbar-tools)",
        );
    }
    found
}

/// Paints the art at `scale` pixels per module: a cell is one module wide
/// and two high; '█' both halves inked, '▀' the top, '▄' the bottom.
fn paint(art: &str, scale: u32) -> image::GrayImage {
    let lines: Vec<Vec<char>> = art.lines().map(|l| l.chars().collect()).collect();
    let width = lines.iter().map(Vec::len).max().unwrap() as u32;
    let height = lines.len() as u32 * 2;
    let mut img = image::GrayImage::from_pixel(width * scale, height * scale, image::Luma([255]));
    for (row, line) in lines.iter().enumerate() {
        for (col, c) in line.iter().enumerate() {
            let (top, bottom) = match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                ' ' => (false, false),
                other => panic!("unexpected character {other:?} in the QR art"),
            };
            for (half, inked) in [(0, top), (1, bottom)] {
                if !inked {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let x = col as u32 * scale + dx;
                        let y = (row as u32 * 2 + half) * scale + dy;
                        img.put_pixel(x, y, image::Luma([0]));
                    }
                }
            }
        }
    }
    img
}

#[test]
fn terminal_qr_decodes_to_the_uri() {
    if !zbarimg_available() {
        return;
    }
    let art = otpd::admin::terminal_qr(URI, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("terminal.png");
    paint(&art, 4).save(&png).unwrap();
    let out = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(out.status.success(), "zbarimg found no code: {:?}", out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), URI);
}
