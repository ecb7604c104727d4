//! Everything the person at the terminal reads, in English and in Dutch, as
//! the help desk's manuals word it ("tokencode"). Pure: the language comes
//! from `lang=` or from the locale, looked up through a closure.
//!
//! Two languages and five sentences do not need gettext and its catalogues
//! installed beside the module; a `match` keeps them checked by the compiler.
#![forbid(unsafe_code)]

/// The language of prompts and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English (the default for any locale that is not Dutch).
    En,
    /// Dutch.
    Nl,
}

impl Lang {
    /// `lang=` as written in the service file; `None` when not a language
    /// the module speaks.
    pub fn parse(text: &str) -> Option<Lang> {
        match text.to_ascii_lowercase().as_str() {
            "en" => Some(Lang::En),
            "nl" => Some(Lang::Nl),
            _ => None,
        }
    }

    /// The language of the locale, POSIX precedence: the first of
    /// `LC_ALL`, `LC_MESSAGES`, `LANG` that is set and not empty decides;
    /// `nl`, `nl_NL.UTF-8`, `nl_BE@euro` … are Dutch, anything else English.
    pub fn from_locale(lookup: impl Fn(&str) -> Option<String>) -> Lang {
        let value = ["LC_ALL", "LC_MESSAGES", "LANG"]
            .iter()
            .filter_map(|name| lookup(name))
            .find(|value| !value.is_empty());
        match value {
            Some(value) if is_dutch(&value) => Lang::Nl,
            _ => Lang::En,
        }
    }

    /// The prompt for the code alone.
    pub fn code_prompt(self) -> &'static str {
        match self {
            Lang::En => "Verification code: ",
            Lang::Nl => "Tokencode: ",
        }
    }

    /// The prompt for the code when the user has a phone for texted codes.
    pub fn code_prompt_with_sms(self) -> &'static str {
        match self {
            Lang::En => "Verification code (or type sms): ",
            Lang::Nl => "Tokencode (of typ sms): ",
        }
    }

    /// The prompt after a code was texted.
    pub fn texted_code_prompt(self) -> &'static str {
        match self {
            Lang::En => "Code from the text message: ",
            Lang::Nl => "Code uit het sms-bericht: ",
        }
    }

    /// Shown when a code was texted.
    pub fn sms_sent(self) -> &'static str {
        match self {
            Lang::En => "A code has been sent to your phone by text message.",
            Lang::Nl => "Er is een code naar uw telefoon gestuurd per sms.",
        }
    }

    /// Shown when no text could be sent.
    pub fn sms_unavailable(self, retry_after_secs: Option<u64>) -> String {
        let minutes = retry_after_secs.map(|s| s.div_ceil(60).max(1));
        match (self, minutes) {
            (Lang::En, None) => "No text message can be sent now. Use the code from the app.".into(),
            (Lang::En, Some(m)) => format!(
                "Too many text messages. Try again in {m} minutes, or use the code from the app."
            ),
            (Lang::Nl, None) => {
                "Er kan nu geen sms worden verstuurd. Gebruik de code uit de app.".into()
            }
            (Lang::Nl, Some(m)) => format!(
                "Te veel sms-berichten. Probeer het over {m} minuten opnieuw, of gebruik de code uit de app."
            ),
        }
    }

    /// Enrolment at the first login: the manual's steps in one paragraph,
    /// around the QR code and the secret.
    pub fn enrolment(self, issuer: &str, account: &str, qr: &str, secret: &str) -> String {
        match self {
            Lang::En => format!(
                "Set up two-step verification. From now on you log in with your password and a \
                 tokencode from an app on your phone. Install an authenticator app (for example \
                 Microsoft Authenticator), open it, choose \"Add account\" (in Microsoft \
                 Authenticator \"Other account\"), then \"Scan a QR code\", and scan this QR \
                 code. It is shown only this once.\n\n{qr}\n\
                 Cannot scan it? Enter this key in the app ({issuer}, {account}, time-based):\n\n    {secret}\n"
            ),
            Lang::Nl => format!(
                "Tweestapsverificatie instellen. Voortaan meldt u zich aan met uw wachtwoord en een \
                 tokencode uit een app op uw telefoon. Installeer een authenticator-app (bijvoorbeeld \
                 Microsoft Authenticator), open de app, kies \"Account toevoegen\" (in Microsoft \
                 Authenticator \"Ander account\"), dan \"QR-code scannen\", en scan deze QR-code. \
                 Hij wordt maar deze ene keer getoond.\n\n{qr}\n\
                 Lukt scannen niet? Voer deze sleutel in de app in ({issuer}, {account}, op tijd gebaseerd):\n\n    {secret}\n"
            ),
        }
    }

    /// The prompt for the first code of the app just set up.
    pub fn first_code_prompt(self) -> &'static str {
        match self {
            Lang::En => "Enter your OTP (the tokencode the app shows now): ",
            Lang::Nl => "Enter your OTP (de tokencode die de app nu toont): ",
        }
    }

    /// The first code was not right.
    pub fn wrong_first_code(self) -> &'static str {
        match self {
            Lang::En => "That is not the tokencode the app shows now. Try again.",
            Lang::Nl => "Dat is niet de tokencode die de app nu toont. Probeer het opnieuw.",
        }
    }

    /// The recovery codes, shown once after the first code.
    pub fn recovery_codes(self, codes: &[&str]) -> String {
        let list = codes.join("\n  ");
        match self {
            Lang::En => format!(
                "Two-step verification is on. Recovery codes: each works once at the \
                 verification code prompt in place of a code from the app. Keep them somewhere \
                 safe; they are not shown again.\n\n  {list}\n"
            ),
            Lang::Nl => format!(
                "Tweestapsverificatie staat aan. Herstelcodes: elke code werkt één keer bij de \
                 vraag om de tokencode, in plaats van een code uit de app. Bewaar ze op een veilige \
                 plek; ze worden niet opnieuw getoond.\n\n  {list}\n"
            ),
        }
    }

    /// Enter to go on after the recovery codes.
    pub fn continue_prompt(self) -> &'static str {
        match self {
            Lang::En => "Press Enter to continue: ",
            Lang::Nl => "Druk op Enter om verder te gaan: ",
        }
    }

    /// The code prompt of a user with a paired phone.
    pub fn code_or_approve_prompt(self) -> &'static str {
        match self {
            Lang::En => "Verification code, or press Enter to approve on your phone: ",
            Lang::Nl => "Tokencode, of druk op Enter om op uw telefoon goed te keuren: ",
        }
    }

    /// The number to pick on the phone (a prompt, not a message: sshd's
    /// keyboard-interactive shows messages only with the next prompt).
    pub fn approve_number_prompt(self, number: u8) -> String {
        match self {
            Lang::En => format!("On your phone, choose {number} to approve, then press Enter: "),
            Lang::Nl => {
                format!("Kies {number} op uw telefoon om goed te keuren en druk dan op Enter: ")
            }
        }
    }

    /// The request expired before it was approved.
    pub fn approve_expired(self) -> &'static str {
        match self {
            Lang::En => "The request expired. Enter the code from the app, or press Enter to try again.",
            Lang::Nl => "Het verzoek is verlopen. Voer de tokencode uit de app in, of druk op Enter om het opnieuw te proberen.",
        }
    }

    /// The request was denied on the phone.
    pub fn approve_denied(self) -> &'static str {
        match self {
            Lang::En => "The sign-in was denied on your phone.",
            Lang::Nl => "De aanmelding is op uw telefoon geweigerd.",
        }
    }

    /// A wrong number was picked on the phone.
    pub fn approve_wrong_number(self) -> &'static str {
        match self {
            Lang::En => "A different number was chosen on your phone; the request is closed.",
            Lang::Nl => "Op uw telefoon is een ander getal gekozen; het verzoek is gesloten.",
        }
    }

    /// No request could be sent to the phone.
    pub fn approve_unavailable(self, retry_after_secs: Option<u64>) -> String {
        let minutes = retry_after_secs.map(|s| s.div_ceil(60).max(1));
        match (self, minutes) {
            (Lang::En, None) => "No request can be sent to your phone now. Use the code from the app.".into(),
            (Lang::En, Some(m)) => format!(
                "Too many requests to your phone. Try again in {m} minutes, or use the code from the app."
            ),
            (Lang::Nl, None) => {
                "Er kan nu geen verzoek naar uw telefoon worden gestuurd. Gebruik de code uit de app.".into()
            }
            (Lang::Nl, Some(m)) => format!(
                "Te veel verzoeken naar uw telefoon. Probeer het over {m} minuten opnieuw, of gebruik de code uit de app."
            ),
        }
    }

    /// `forward_pass`: one prompt for the password followed by the code.
    pub fn password_and_code_prompt(self) -> &'static str {
        match self {
            Lang::En => "Password + verification code: ",
            Lang::Nl => "Wachtwoord + tokencode: ",
        }
    }

    /// `forward_pass` with `nullok` for a user without a token: the
    /// password alone, for the next module.
    pub fn password_prompt(self) -> &'static str {
        match self {
            Lang::En => "Password: ",
            Lang::Nl => "Wachtwoord: ",
        }
    }

    /// The daemon is backing off this user or source.
    pub fn throttled(self, retry_after_secs: u64) -> String {
        let (count, unit) = match retry_after_secs {
            0 | 1 => (1, Unit::Second),
            secs @ 2..=119 => (secs, Unit::Seconds),
            secs => (secs.div_ceil(60), Unit::Minutes),
        };
        match self {
            Lang::En => {
                let unit = match unit {
                    Unit::Second => "second",
                    Unit::Seconds => "seconds",
                    Unit::Minutes => "minutes",
                };
                format!("Too many failed attempts. Try again in {count} {unit}.")
            }
            Lang::Nl => {
                let unit = match unit {
                    Unit::Second => "seconde",
                    Unit::Seconds => "seconden",
                    Unit::Minutes => "minuten",
                };
                format!("Te veel mislukte pogingen. Probeer het over {count} {unit} opnieuw.")
            }
        }
    }

    /// The code cannot be checked: the daemon is down, slow or untrusted.
    pub fn unavailable(self) -> &'static str {
        match self {
            Lang::En => {
                "The verification code cannot be checked right now. \
                 Try again later or contact your administrator."
            }
            Lang::Nl => {
                "De tokencode kan nu niet worden gecontroleerd. \
                 Probeer het later opnieuw of neem contact op met uw beheerder."
            }
        }
    }
}

enum Unit {
    Second,
    Seconds,
    Minutes,
}

/// `nl` followed by the end, `_`, `.` or `@` (not `nn`, not `nld`-like codes).
fn is_dutch(locale: &str) -> bool {
    let Some(rest) = locale.strip_prefix("nl") else {
        return false;
    };
    rest.is_empty() || rest.starts_with(['_', '.', '@'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn the_locale_picks_the_language_with_posix_precedence() {
        assert_eq!(Lang::from_locale(env(&[])), Lang::En);
        assert_eq!(Lang::from_locale(env(&[("LANG", "nl_NL.UTF-8")])), Lang::Nl);
        assert_eq!(Lang::from_locale(env(&[("LANG", "nl_BE@euro")])), Lang::Nl);
        assert_eq!(Lang::from_locale(env(&[("LANG", "nl")])), Lang::Nl);
        assert_eq!(Lang::from_locale(env(&[("LANG", "C.UTF-8")])), Lang::En);
        assert_eq!(Lang::from_locale(env(&[("LANG", "nn_NO.UTF-8")])), Lang::En);
        assert_eq!(Lang::from_locale(env(&[("LANG", "nlx")])), Lang::En);
        // LC_ALL beats LC_MESSAGES beats LANG; an empty value does not count.
        let vars = [("LC_ALL", "en_GB.UTF-8"), ("LANG", "nl_NL.UTF-8")];
        assert_eq!(Lang::from_locale(env(&vars)), Lang::En);
        let vars = [("LC_ALL", ""), ("LC_MESSAGES", "nl_NL"), ("LANG", "en_US")];
        assert_eq!(Lang::from_locale(env(&vars)), Lang::Nl);
    }

    #[test]
    fn lang_values() {
        assert_eq!(Lang::parse("nl"), Some(Lang::Nl));
        assert_eq!(Lang::parse("NL"), Some(Lang::Nl));
        assert_eq!(Lang::parse("en"), Some(Lang::En));
        assert_eq!(Lang::parse("de"), None);
        assert_eq!(Lang::parse(""), None);
    }

    #[test]
    fn prompts_in_both_languages() {
        assert_eq!(Lang::En.code_prompt(), "Verification code: ");
        assert_eq!(Lang::Nl.code_prompt(), "Tokencode: ");
        assert_eq!(
            Lang::En.password_and_code_prompt(),
            "Password + verification code: "
        );
        assert_eq!(
            Lang::Nl.password_and_code_prompt(),
            "Wachtwoord + tokencode: "
        );
        assert_eq!(Lang::Nl.password_prompt(), "Wachtwoord: ");
        assert!(Lang::Nl
            .unavailable()
            .starts_with("De tokencode kan nu niet"));
        assert_eq!(Lang::Nl.code_prompt_with_sms(), "Tokencode (of typ sms): ");
        assert_eq!(
            Lang::En.texted_code_prompt(),
            "Code from the text message: "
        );
        assert!(Lang::Nl
            .sms_unavailable(Some(61))
            .contains("over 2 minuten"));
        assert!(Lang::En
            .sms_unavailable(None)
            .starts_with("No text message"));
    }

    #[test]
    fn throttled_message_text() {
        let en = |secs| Lang::En.throttled(secs);
        assert_eq!(en(0), "Too many failed attempts. Try again in 1 second.");
        assert_eq!(en(1), "Too many failed attempts. Try again in 1 second.");
        assert_eq!(en(2), "Too many failed attempts. Try again in 2 seconds.");
        assert_eq!(
            en(119),
            "Too many failed attempts. Try again in 119 seconds."
        );
        assert_eq!(en(120), "Too many failed attempts. Try again in 2 minutes.");
        assert_eq!(en(121), "Too many failed attempts. Try again in 3 minutes.");
        let nl = |secs| Lang::Nl.throttled(secs);
        assert_eq!(
            nl(1),
            "Te veel mislukte pogingen. Probeer het over 1 seconde opnieuw."
        );
        assert_eq!(
            nl(42),
            "Te veel mislukte pogingen. Probeer het over 42 seconden opnieuw."
        );
        assert_eq!(
            nl(3600),
            "Te veel mislukte pogingen. Probeer het over 60 minuten opnieuw."
        );
    }
}
