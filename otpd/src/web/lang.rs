//! The language of the pages (Dutch or English, by `Accept-Language`) and
//! every text they show, worded like the help-desk manuals in `seeds/`.
//!
//! The header is parsed here rather than with a crate: we only need to
//! know whether `nl` is preferred over `en`, which takes a few lines, and
//! a malformed header must simply fall back to English.

/// The language a page is shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English, the default.
    En,
    /// Dutch.
    Nl,
}

impl Lang {
    /// Dutch when `Accept-Language` prefers `nl` (any region) over `en`,
    /// by q-value and then by order; English otherwise, also for a missing
    /// or malformed header. A `*` counts for neither.
    pub fn from_accept_language(header: Option<&str>) -> Lang {
        let Some(header) = header else {
            return Lang::En;
        };
        // (q, position) of the best range for each language; q = 0 means
        // "not acceptable" (RFC 9110 §12.4.2), the same as not listed.
        let mut dutch: Option<(u16, usize)> = None;
        let mut english: Option<(u16, usize)> = None;
        for (position, item) in header.split(',').enumerate() {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let primary = tag.split('-').next().unwrap_or("");
            let mut quality = 1000;
            for parameter in parts {
                let parameter = parameter.trim();
                if let Some(value) = parameter
                    .strip_prefix("q=")
                    .or_else(|| parameter.strip_prefix("Q="))
                {
                    match parse_quality(value.trim()) {
                        Some(q) => quality = q,
                        None => return Lang::En,
                    }
                }
            }
            let slot = if primary.eq_ignore_ascii_case("nl") {
                &mut dutch
            } else if primary.eq_ignore_ascii_case("en") {
                &mut english
            } else {
                continue;
            };
            // The first range of a language with its highest q counts.
            if !matches!(*slot, Some((best, _)) if best >= quality) {
                *slot = Some((quality, position));
            }
        }
        match (dutch, english) {
            (Some((0, _)), _) | (None, _) => Lang::En,
            (Some(_), None) => Lang::Nl,
            (Some((nl_q, nl_pos)), Some((en_q, en_pos))) => {
                if nl_q > en_q || (nl_q == en_q && nl_pos < en_pos) {
                    Lang::Nl
                } else {
                    Lang::En
                }
            }
        }
    }

    /// The value of `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Nl => "nl",
        }
    }

    /// Every text of the pages in this language.
    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::En => &ENGLISH,
            Lang::Nl => &DUTCH,
        }
    }

    /// A wait in words: "45 seconds", "1 minute", "3 minuten" (rounded up
    /// to whole minutes from a minute on).
    pub fn duration(self, seconds: u64) -> String {
        let (count, one, many) = if seconds < 60 {
            let (one, many) = match self {
                Lang::En => ("second", "seconds"),
                Lang::Nl => ("seconde", "seconden"),
            };
            (seconds.max(1), one, many)
        } else {
            let (one, many) = match self {
                Lang::En => ("minute", "minutes"),
                Lang::Nl => ("minuut", "minuten"),
            };
            (seconds.div_ceil(60), one, many)
        };
        format!("{count} {}", if count == 1 { one } else { many })
    }

    /// "Too many wrong codes. Wait 5 minutes and try again."
    pub fn throttled(self, seconds: u64) -> String {
        let t = self.texts();
        format!(
            "{} {} {}",
            t.throttled_before,
            self.duration(seconds),
            t.throttled_after
        )
    }

    /// "This link was opened before, at 2026-12-05 14:03 UTC. If that was
    /// not you, tell your help desk." The time is in UTC: the daemon does
    /// not know the reader's time zone, and says which one it uses.
    pub fn opened_before(self, unix_time: u64) -> String {
        let t = self.texts();
        let when = i64::try_from(unix_time)
            .ok()
            .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
            .map_or_else(
                || unix_time.to_string(),
                |at| at.format("%Y-%m-%d %H:%M UTC").to_string(),
            );
        format!(
            "{} {when}. {}",
            t.opened_before_before, t.opened_before_after
        )
    }

    /// "Too many text messages. Wait 40 minutes and try again."
    pub fn sms_limited(self, seconds: u64) -> String {
        let t = self.texts();
        format!(
            "{} {} {}",
            t.sms_limited_before,
            self.duration(seconds),
            t.sms_limited_after
        )
    }
}

/// A q-value (RFC 9110 §12.4.2: `0`, `1`, up to three decimals) in
/// thousandths.
fn parse_quality(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The texts of the pages. The labels the manuals name ("Enter your OTP",
/// "Validate", "Verifiëren") are kept as the manuals have them.
pub struct Texts {
    /// `<title>` of every page.
    pub page_title: &'static str,

    /// Heading of the enrolment page.
    pub enroll_heading: &'static str,
    /// What the user is about to do.
    pub enroll_intro: &'static str,
    /// Step 1: install an app.
    pub step_install: &'static str,
    /// Step 2: add an account in the app.
    pub step_add_account: &'static str,
    /// Step 3 before the QR code is shown: press the button (once).
    pub step_reveal: &'static str,
    /// The button that shows the QR code.
    pub reveal: &'static str,
    /// Step 3: scan the QR code.
    pub step_scan: &'static str,
    /// Under the QR code: shown once; showing it again makes a new one.
    pub qr_once: &'static str,
    /// "This link was opened before, at" (the time follows).
    pub opened_before_before: &'static str,
    /// After the time: what to do if that was not the reader.
    pub opened_before_after: &'static str,
    /// "Show QR code" from a page that cannot show it (a reload, an old page).
    pub stale_view: &'static str,
    /// Step 4: type the code, press Validate.
    pub step_enter: &'static str,
    /// Text alternative of the QR code.
    pub qr_label: &'static str,
    /// Heading of the manual entry details.
    pub manual_heading: &'static str,
    /// Above the manual entry details.
    pub manual_intro: &'static str,
    /// "Issuer".
    pub issuer: &'static str,
    /// "Account".
    pub account: &'static str,
    /// "Key" (the secret).
    pub secret: &'static str,
    /// "Type" of the key.
    pub key_type: &'static str,
    /// "Time based".
    pub key_type_value: &'static str,
    /// "Digits".
    pub digits: &'static str,
    /// Label of the code field: "Enter your OTP".
    pub enter_code: &'static str,
    /// The submit button: "Validate".
    pub validate: &'static str,
    /// A wrong code on the enrolment page.
    pub wrong_code: &'static str,
    /// Too many wrong codes: before the wait.
    pub throttled_before: &'static str,
    /// Too many wrong codes: after the wait.
    pub throttled_after: &'static str,

    /// Heading of the success page.
    pub success_heading: &'static str,
    /// "The app is now set up for" (the user name follows).
    pub success_for: &'static str,
    /// How to log in from now on.
    pub success_login: &'static str,
    /// Heading of the recovery codes.
    pub recovery_heading: &'static str,
    /// What recovery codes are for.
    pub recovery_intro: &'static str,
    /// Keep them safe; each works once; shown only now.
    pub recovery_keep: &'static str,

    /// Heading of the phone step.
    pub phone_heading: &'static str,
    /// The success page's pairing step: heading.
    pub approver_heading: &'static str,
    /// The success page's pairing step: what the second QR code is for.
    pub approver_intro: &'static str,
    /// What the phone number is for.
    pub phone_intro: &'static str,
    /// Label of the number field.
    pub phone_number: &'static str,
    /// The button that sends the text message.
    pub send_sms: &'static str,
    /// The phone step is optional.
    pub phone_skip: &'static str,
    /// Not a number in international form.
    pub bad_number: &'static str,
    /// The sender failed.
    pub send_failed: &'static str,
    /// Too many text messages: before the wait.
    pub sms_limited_before: &'static str,
    /// Too many text messages: after the wait.
    pub sms_limited_after: &'static str,

    /// Heading of the page that asks for the texted code.
    pub phone_code_heading: &'static str,
    /// A text message was sent.
    pub phone_code_intro: &'static str,
    /// Label of the texted code field.
    pub phone_code_label: &'static str,
    /// The button: "Verify" / "Verifiëren".
    pub verify: &'static str,
    /// A wrong or expired texted code.
    pub phone_wrong_code: &'static str,

    /// Heading of the page after the number is registered.
    pub phone_done_heading: &'static str,
    /// The number is registered; how to use it.
    pub phone_done_text: &'static str,
    /// "You can close this page."
    pub close_page: &'static str,

    /// Heading of the page for too many requests or a busy daemon.
    pub retry_heading: &'static str,
    /// Too many requests from the reader's address (429).
    pub too_many_requests: &'static str,
    /// The pages are busy (503).
    pub busy: &'static str,

    /// Heading of the neutral page.
    pub invalid_heading: &'static str,
    /// The one text of the neutral page.
    pub invalid_text: &'static str,
}

static ENGLISH: Texts = Texts {
    page_title: "Two-step verification",

    enroll_heading: "Set up two-step verification",
    enroll_intro: "From now on you log in with your user name, your password and a \
        tokencode (a one-time password) from an app on your phone. Follow these \
        steps with this page open on your PC or laptop and your phone at hand.",
    step_install: "Install an authenticator app on your phone, for example \
        “Microsoft Authenticator”, from the App Store (iPhone) or the Google Play \
        Store (Android).",
    step_add_account: "Open the app and choose “Add account” or the “+” sign at \
        the top right. In Microsoft Authenticator choose “Other account”, then \
        “Scan a QR code”.",
    step_reveal: "Choose “Show QR code”. Each time you do, a new QR code is made and \
        only the newest one works: if you have already scanned the QR code of this \
        link, do not choose it again, but enter the tokencode at the next step.",
    reveal: "Show QR code",
    step_scan: "Scan the QR code below with the app. Once it is scanned, open the \
        added account in the app: you now see a tokencode (a one-time password).",
    qr_once: "This QR code is shown only this once. If it is shown again, a new one \
        is made and this one stops working.",
    opened_before_before: "This link was opened before, at",
    opened_before_after: "If that was not you, tell your help desk.",
    stale_view: "This page was out of date, so no QR code was shown. Choose “Show QR \
        code” again.",
    step_enter: "Enter the tokencode below at “Enter your OTP” and choose “Validate”.",
    qr_label: "QR code to scan with the authenticator app",
    manual_heading: "Cannot scan the QR code?",
    manual_intro: "Add the account by hand in the app with these details:",
    issuer: "Issuer",
    account: "Account",
    secret: "Key",
    key_type: "Type",
    key_type_value: "Time based",
    digits: "Digits",
    enter_code: "Enter your OTP",
    validate: "Validate",
    wrong_code: "That code is not right. Enter the newest code the app shows and \
        try again.",
    throttled_before: "Too many wrong codes. Wait",
    throttled_after: "and try again with the newest code from the app.",

    success_heading: "Your app is set up",
    success_for: "The tokencode has been added correctly for",
    success_login: "From now on you log in with your user name and password and the \
        tokencode (one-time password) that the app on your phone shows.",
    recovery_heading: "Recovery codes",
    recovery_intro: "If you do not have your phone at hand, you can type one of \
        these codes instead of a tokencode.",
    recovery_keep: "Keep them somewhere safe, for example printed or in your \
        password manager. Each code works once. This page shows them only this once.",

    phone_heading: "Add a phone number",
    approver_heading: "Approve sign-ins on your phone",
    approver_intro: "Scan this with your phone's camera to approve sign-ins on your phone. \
        The link works once, for ten minutes.",
    phone_intro: "Add a phone number for when the app does not work. A code is then \
        sent to you by text message.",
    phone_number: "Phone number for when the app does not work, in international \
        form (for example +31612345678)",
    send_sms: "Send code by text message",
    phone_skip: "This step is optional: you can also close this page.",
    bad_number: "That is not a phone number in international form. Enter it with a \
        + and the country code, for example +31612345678.",
    send_failed: "The text message could not be sent. Try again later or contact \
        your help desk.",
    sms_limited_before: "Too many text messages. Wait",
    sms_limited_after: "and try again.",

    phone_code_heading: "Enter the verification code",
    phone_code_intro: "A text message with a code has been sent to the number you \
        entered.",
    phone_code_label: "Enter the verification code you received",
    verify: "Verify",
    phone_wrong_code: "That code is not right or has expired. Check the text message \
        and try again.",

    phone_done_heading: "Verification complete",
    phone_done_text: "Your phone number has been added. If the app does not work, \
        type sms when you are asked for the tokencode: a code is then sent to this \
        number by text message.",
    close_page: "You can close this page.",

    retry_heading: "Try again later",
    too_many_requests: "Too many requests from your network. Wait a minute and try \
        again.",
    busy: "This page is busy. Wait a minute and try again.",

    invalid_heading: "Link not valid",
    invalid_text: "This link is not valid (any more). Ask your help desk for a new one.",
};

static DUTCH: Texts = Texts {
    page_title: "Tweestapsverificatie",

    enroll_heading: "Tweestapsverificatie instellen",
    enroll_intro: "U logt vanaf nu in met uw gebruikersnaam, uw wachtwoord en een \
        tokencode (eenmalige wachtwoordcode) uit een app op uw telefoon. Volg deze \
        stappen met deze pagina open op uw PC of laptop en uw telefoon bij de hand.",
    step_install: "Installeer een authenticator-app op uw telefoon, bijvoorbeeld \
        “Microsoft Authenticator”, uit de App Store (iPhone) of de Google Play Store \
        (Android).",
    step_add_account: "Open de app en kies voor “Account toevoegen” of het “+” teken \
        rechtsboven. Kies in Microsoft Authenticator voor “Ander account” en daarna \
        voor “Een QR-code scannen”.",
    step_reveal: "Kies “QR-code tonen”. Elke keer dat u daarvoor kiest, wordt er een \
        nieuwe QR-code gemaakt en werkt alleen de nieuwste: heeft u de QR-code van deze \
        link al gescand, kies dan niet opnieuw, maar vul bij de volgende stap de \
        tokencode in.",
    reveal: "QR-code tonen",
    step_scan: "Scan de QR-code hieronder met de app. Zodra de QR-code is gescand, \
        opent u het toegevoegde account in de app: u ziet nu een tokencode \
        (eenmalige wachtwoordcode).",
    qr_once: "Deze QR-code wordt maar één keer getoond. Wordt hij opnieuw getoond, \
        dan wordt er een nieuwe gemaakt en werkt deze niet meer.",
    opened_before_before: "Deze link is al eerder geopend, op",
    opened_before_after: "Was u dat niet? Meld het dan bij uw helpdesk.",
    stale_view: "Deze pagina was verlopen, daarom is er geen QR-code getoond. Kies \
        opnieuw “QR-code tonen”.",
    step_enter: "Vul de tokencode hieronder in bij “Voer de tokencode in” en kies \
        “Valideren”.",
    qr_label: "QR-code om te scannen met de authenticator-app",
    manual_heading: "Lukt het scannen van de QR-code niet?",
    manual_intro: "Voeg het account met de hand toe in de app, met deze gegevens:",
    issuer: "Uitgever",
    account: "Account",
    secret: "Sleutel",
    key_type: "Type",
    key_type_value: "Op tijd gebaseerd",
    digits: "Cijfers",
    enter_code: "Voer de tokencode in",
    validate: "Valideren",
    wrong_code: "Deze code klopt niet. Vul de nieuwste code uit de app in en probeer \
        het opnieuw.",
    throttled_before: "Te veel onjuiste codes. Wacht",
    throttled_after: "en probeer het dan opnieuw met de nieuwste code uit de app.",

    success_heading: "Uw app is ingesteld",
    success_for: "De tokencode is nu correct toegevoegd voor",
    success_login: "U logt vanaf nu in met uw gebruikersnaam en wachtwoord en de \
        tokencode (eenmalige wachtwoordcode) die de app op uw telefoon toont.",
    recovery_heading: "Herstelcodes",
    recovery_intro: "Heeft u uw telefoon niet bij de hand, dan kunt u in plaats van \
        een tokencode een van deze codes invullen.",
    recovery_keep: "Bewaar ze op een veilige plek, bijvoorbeeld geprint of in uw \
        wachtwoordmanager. Elke code werkt één keer. Deze pagina toont ze alleen nu.",

    phone_heading: "Telefoonnummer toevoegen",
    approver_heading: "Aanmeldingen goedkeuren op uw telefoon",
    approver_intro: "Scan deze code met de camera van uw telefoon om aanmeldingen op uw \
        telefoon goed te keuren. De link werkt één keer, tien minuten lang.",
    phone_intro: "Voeg een telefoonnummer toe voor als de app niet werkt. U ontvangt \
        dan een code per sms-bericht.",
    phone_number: "Telefoonnummer voor als de app niet werkt, in internationale vorm \
        (bijvoorbeeld +31612345678)",
    send_sms: "Code per sms-bericht verzenden",
    phone_skip: "Deze stap is niet verplicht: u kunt deze pagina ook sluiten.",
    bad_number: "Dit is geen telefoonnummer in internationale vorm. Vul het in met een \
        + en de landcode, bijvoorbeeld +31612345678.",
    send_failed: "Het sms-bericht kon niet worden verstuurd. Probeer het later opnieuw \
        of neem contact op met uw helpdesk.",
    sms_limited_before: "Te veel sms-berichten. Wacht",
    sms_limited_after: "en probeer het dan opnieuw.",

    phone_code_heading: "Verificatiecode invoeren",
    phone_code_intro: "Er is een sms-bericht met een code verstuurd naar het nummer \
        dat u heeft ingevoerd.",
    phone_code_label: "Voer de ontvangen verificatiecode in",
    verify: "Verifiëren",
    phone_wrong_code: "Deze code klopt niet of is verlopen. Controleer het sms-bericht \
        en probeer het opnieuw.",

    phone_done_heading: "Verificatie voltooid",
    phone_done_text: "Uw telefoonnummer is toegevoegd. Werkt de app niet, typ dan sms \
        als om de tokencode wordt gevraagd: er wordt dan een code per sms-bericht naar \
        dit nummer verstuurd.",
    close_page: "U kunt deze pagina sluiten.",

    retry_heading: "Probeer het later opnieuw",
    too_many_requests: "Te veel verzoeken vanaf uw netwerk. Wacht een minuut en \
        probeer het opnieuw.",
    busy: "Deze pagina is bezet. Wacht een minuut en probeer het opnieuw.",

    invalid_heading: "Link niet geldig",
    invalid_text: "Deze link is niet (meer) geldig. Vraag uw helpdesk om een nieuwe.",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_dutch_only_when_preferred() {
        let cases = [
            (None, Lang::En),
            (Some(""), Lang::En),
            (Some("nl"), Lang::Nl),
            (Some("nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7"), Lang::Nl),
            (Some("en-US,en;q=0.9,nl;q=0.8"), Lang::En),
            (Some("en;q=0.5, nl-BE;q=0.8"), Lang::Nl),
            (Some("de-DE, nl;q=0.5"), Lang::Nl),
            (Some("de-DE, fr"), Lang::En),
            (Some("nl;q=0"), Lang::En),
            (Some("NL-be"), Lang::Nl),
            (Some("en, nl"), Lang::En),
            (Some("nl, en"), Lang::Nl),
            (Some("*, nl;q=0.1"), Lang::Nl),
            (Some("nl;q=2"), Lang::En),
            (Some("nl;q=abc"), Lang::En),
            (Some("nl;q=0.0001"), Lang::En),
            (Some(" nl ; q=0.7 , en ; q=0.700"), Lang::Nl),
        ];
        for (header, expected) in cases {
            assert_eq!(Lang::from_accept_language(header), expected, "{header:?}");
        }
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(Lang::En.duration(0), "1 second");
        assert_eq!(Lang::En.duration(45), "45 seconds");
        assert_eq!(Lang::En.duration(60), "1 minute");
        assert_eq!(Lang::En.duration(61), "2 minutes");
        assert_eq!(Lang::Nl.duration(1), "1 seconde");
        assert_eq!(Lang::Nl.duration(300), "5 minuten");
        assert_eq!(
            Lang::En.opened_before(1_796_443_380),
            "This link was opened before, at 2026-12-05 04:03 UTC. If that was not you, \
             tell your help desk."
        );
        assert_eq!(
            Lang::Nl.opened_before(0),
            "Deze link is al eerder geopend, op 1970-01-01 00:00 UTC. Was u dat niet? \
             Meld het dan bij uw helpdesk."
        );
        assert_eq!(
            Lang::Nl.throttled(120),
            "Te veel onjuiste codes. Wacht 2 minuten en probeer het dan opnieuw met de \
             nieuwste code uit de app."
        );
    }
}
