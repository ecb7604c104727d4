//! What counts as a typed code.

use zeroize::Zeroizing;

/// Normalises a code as the person typed it: surrounding white space is
/// trimmed and one inner space is allowed ("123 456", as apps display it).
/// Anything else that is not exactly `digits` ASCII digits is `None`, which
/// the decision treats as a wrong code.
pub fn normalize(input: &str, digits: u8) -> Option<Zeroizing<String>> {
    let trimmed = input.trim();
    let mut out = Zeroizing::new(String::with_capacity(trimmed.len()));
    let mut spaces = 0;
    for c in trimmed.chars() {
        match c {
            '0'..='9' => out.push(c),
            ' ' => spaces += 1,
            _ => return None,
        }
    }
    (spaces <= 1 && out.len() == usize::from(digits)).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    fn n(s: &str, d: u8) -> Option<String> {
        normalize(s, d).map(|z| z.to_string())
    }

    #[test]
    fn accepts_plain_trimmed_and_one_inner_space() {
        assert_eq!(n("123456", 6).as_deref(), Some("123456"));
        assert_eq!(n("  123456\n", 6).as_deref(), Some("123456"));
        assert_eq!(n("123 456", 6).as_deref(), Some("123456"));
        assert_eq!(n("1234 5678", 8).as_deref(), Some("12345678"));
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "12345",
            "1234567",
            "12a456",
            "123  456",
            "1 23 456",
            "123-456",
            "١٢٣٤٥٦",
            "123456\0",
            "12345\u{3000}6",
            "+12345",
        ] {
            assert_eq!(n(bad, 6), None, "{bad:?}");
        }
        assert_eq!(n("123456", 8), None);
    }
}
