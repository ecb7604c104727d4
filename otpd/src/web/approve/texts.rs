//! Every text of the phone app (`approve_pair.html`, `approve_app.html`
//! and, through the `data-text-*` attributes those templates render, the
//! few sentences `app.js` shows), in English and Dutch, worded like the
//! help-desk manuals in `seeds/`: "a notification will be sent to your
//! phone to test the app; to complete the request, select Approve" and
//! "the next time you sign in, you'll need to approve the login attempt
//! on your phone". The buttons keep the manuals' names ("Approve",
//! "Goedkeuren").

/// The texts of the phone app's pages and script.
pub struct ApproveTexts {
    /// `<title>` of both pages.
    pub page_title: &'static str,
    /// Shown when the browser runs no JavaScript.
    pub needs_script: &'static str,

    /// Heading of the pairing page.
    pub pair_heading: &'static str,
    /// What pairing this phone does.
    pub pair_intro: &'static str,
    /// Step 1: add the app to the home screen, from the browser's menu.
    pub install_step: &'static str,
    /// The button shown when the browser offers to install the app.
    pub install: &'static str,
    /// Step 2: the button, then the passkey and the notifications.
    pub turn_on_step: &'static str,
    /// Label of the optional phone name field.
    pub phone_name: &'static str,
    /// The button that pairs the phone.
    pub turn_on: &'static str,
    /// While pairing: follow the phone's questions.
    pub pairing: &'static str,
    /// The passkey was not created (cancelled or timed out).
    pub pair_cancelled: &'static str,
    /// The server refused or failed (a used or expired link, mostly).
    pub pair_failed: &'static str,
    /// The browser cannot create passkeys.
    pub no_passkeys: &'static str,

    /// Heading of the app page.
    pub app_heading: &'static str,
    /// No app token on this phone.
    pub not_paired: &'static str,
    /// The pairing waits for the test request to be approved.
    pub inactive: &'static str,
    /// No pending requests.
    pub no_requests: &'static str,
    /// Under "No sign-in requests": where they come from.
    pub no_requests_hint: &'static str,
    /// Notifications are not available or not allowed.
    pub no_push: &'static str,
    /// The button that asks for notifications again.
    pub enable_push: &'static str,
    /// The server cannot be reached.
    pub offline: &'static str,

    /// Heading of a sign-in request.
    pub request_heading: &'static str,
    /// Heading of the test request sent when pairing.
    pub test_heading: &'static str,
    /// The manuals' sentence for the test request.
    pub test_text: &'static str,
    /// "User".
    pub user: &'static str,
    /// "Computer" (the host).
    pub host: &'static str,
    /// "Service" (sshd, sudo, …).
    pub service: &'static str,
    /// "From" (the source address).
    pub source: &'static str,
    /// "Time" (local time of the request).
    pub time: &'static str,
    /// Above the three numbers.
    pub choose_number: &'static str,
    /// Accessible name of the group of numbers.
    pub numbers_label: &'static str,
    /// The one button of a test request: "Approve".
    pub approve: &'static str,
    /// "Deny".
    pub deny: &'static str,
    /// The checkbox next to "Deny".
    pub not_me: &'static str,

    /// While the passkey is asked for.
    pub confirm: &'static str,
    /// `data-outcome="approved"`.
    pub approved: &'static str,
    /// `data-outcome="approved"` for the test request: pairing is done.
    pub test_approved: &'static str,
    /// `data-outcome="denied"`.
    pub denied: &'static str,
    /// `data-outcome="denied"` with "This wasn't me".
    pub denied_not_me: &'static str,
    /// `data-outcome="wrong_number"`.
    pub wrong_number: &'static str,
    /// `data-outcome="error"` after HTTP 409 or 404: answered or expired.
    pub closed: &'static str,
    /// `data-outcome="error"`: the passkey was not confirmed.
    pub not_confirmed: &'static str,
    /// `data-outcome="error"`: anything else.
    pub error: &'static str,
}

/// English.
pub const EN: ApproveTexts = ApproveTexts {
    page_title: "Sign-in approvals",
    needs_script: "This page needs JavaScript. Turn it on in your browser's settings \
        and open the page again.",

    pair_heading: "Approve sign-ins on your phone",
    pair_intro: "Set up your phone so that you approve the login attempt on your phone \
        when you sign in, instead of typing a tokencode. A tokencode from the \
        authenticator app keeps working. Follow these steps on your phone.",
    install_step: "Add this app to your home screen. On Android, open the browser's \
        menu (⋮) and choose “Add to Home screen” or “Install app”. On an iPhone, tap \
        the Share button in Safari and choose “Add to Home Screen”.",
    install: "Add to home screen",
    turn_on_step: "Choose “Turn on sign-in approvals”. Your phone asks for your \
        fingerprint, face or PIN to create a passkey, and then whether to allow \
        notifications: allow notifications when prompted.",
    phone_name: "Name of this phone (optional, for example “Work phone”)",
    turn_on: "Turn on sign-in approvals",
    pairing: "Setting up… Follow the questions on your phone.",
    pair_cancelled: "The passkey was not created. Choose “Turn on sign-in approvals” \
        to try again.",
    pair_failed: "Sign-in approvals could not be turned on. This link may have been \
        used or expired: ask your help desk for a new one.",
    no_passkeys: "This browser cannot create a passkey. Open this link in Chrome \
        (Android) or Safari (iPhone).",

    app_heading: "Sign-in requests",
    not_paired: "This phone is not paired yet. Scan the QR code on the page where you \
        set up two-step verification, or ask your help desk for a link.",
    inactive: "Almost done: approve the test request below to turn on sign-in \
        approvals.",
    no_requests: "No sign-in requests",
    no_requests_hint: "When you sign in, the request appears here.",
    no_push: "Notifications are not available on this phone. Open this app when you \
        sign in: requests show when the app is opened.",
    enable_push: "Turn on notifications",
    offline: "No connection. Requests show again when the connection is back.",

    request_heading: "Approve sign-in?",
    test_heading: "Test request",
    test_text: "A notification was sent to your phone to test the app. To complete \
        the request, select “Approve”.",
    user: "User",
    host: "Computer",
    service: "Service",
    source: "From",
    time: "Time",
    choose_number: "Choose the number shown where you are signing in.",
    numbers_label: "Numbers",
    approve: "Approve",
    deny: "Deny",
    not_me: "This wasn't me",

    confirm: "Confirm with your fingerprint, face or PIN.",
    approved: "Sign-in approved. You can go back to where you are signing in.",
    test_approved: "Sign-in approvals are on. The next time you sign in, you'll need \
        to approve the login attempt on your phone.",
    denied: "Sign-in denied.",
    denied_not_me: "Sign-in denied and reported. If you did not try to sign in, tell \
        your help desk: someone may know your password.",
    wrong_number: "That was not the number shown where you are signing in, so the \
        sign-in was refused. Sign in again and choose the number shown there.",
    closed: "This request is no longer open: it was answered or has expired.",
    not_confirmed: "Not approved: your fingerprint, face or PIN was not confirmed. \
        Choose the number again to try again.",
    error: "Something went wrong. Try again, or contact your help desk.",
};

/// Dutch.
pub const NL: ApproveTexts = ApproveTexts {
    page_title: "Aanmeldingen goedkeuren",
    needs_script: "Deze pagina heeft JavaScript nodig. Zet het aan in de instellingen \
        van uw browser en open de pagina opnieuw.",

    pair_heading: "Aanmeldingen goedkeuren op uw telefoon",
    pair_intro: "Stel uw telefoon zo in dat u de inlogpoging op uw telefoon goedkeurt \
        wanneer u inlogt, in plaats van een tokencode in te vullen. Een tokencode uit \
        de authenticator-app blijft werken. Volg deze stappen op uw telefoon.",
    install_step: "Zet deze app op het startscherm van uw telefoon. Open op Android \
        het menu van de browser (⋮) en kies “Toevoegen aan startscherm” of “App \
        installeren”. Tik op een iPhone in Safari op de deelknop en kies “Zet op \
        beginscherm”.",
    install: "Toevoegen aan startscherm",
    turn_on_step: "Kies “Goedkeuren op telefoon aanzetten”. Uw telefoon vraagt om uw \
        vingerafdruk, gezicht of pincode om een toegangssleutel te maken, en daarna \
        of u meldingen wilt toestaan: sta meldingen toe als hierom wordt gevraagd.",
    phone_name: "Naam van deze telefoon (niet verplicht, bijvoorbeeld “Werktelefoon”)",
    turn_on: "Goedkeuren op telefoon aanzetten",
    pairing: "Bezig met instellen… Volg de vragen op uw telefoon.",
    pair_cancelled: "De toegangssleutel is niet gemaakt. Kies “Goedkeuren op telefoon \
        aanzetten” om het opnieuw te proberen.",
    pair_failed: "Goedkeuren op uw telefoon kon niet worden aangezet. Deze link is \
        misschien al gebruikt of verlopen: vraag uw helpdesk om een nieuwe.",
    no_passkeys: "Deze browser kan geen toegangssleutel maken. Open deze link in Chrome \
        (Android) of Safari (iPhone).",

    app_heading: "Aanmeldverzoeken",
    not_paired: "Deze telefoon is nog niet gekoppeld. Scan de QR-code op de pagina \
        waar u tweestapsverificatie heeft ingesteld, of vraag uw helpdesk om een link.",
    inactive: "Bijna klaar: keur de testmelding hieronder goed om goedkeuren op uw \
        telefoon aan te zetten.",
    no_requests: "Geen aanmeldverzoeken",
    no_requests_hint: "Wanneer u inlogt, verschijnt het verzoek hier.",
    no_push: "Meldingen zijn op deze telefoon niet beschikbaar. Open deze app wanneer \
        u inlogt: verzoeken verschijnen zodra de app geopend is.",
    enable_push: "Meldingen aanzetten",
    offline: "Geen verbinding. Verzoeken verschijnen weer zodra er verbinding is.",

    request_heading: "Aanmelding goedkeuren?",
    test_heading: "Testmelding",
    test_text: "Er is een melding verstuurd naar uw telefoon om te testen of de app \
        werkt. Om de aanvraag te voltooien, selecteert u “Goedkeuren”.",
    user: "Gebruiker",
    host: "Computer",
    service: "Dienst",
    source: "Vanaf",
    time: "Tijd",
    choose_number: "Kies het getal dat wordt getoond waar u inlogt.",
    numbers_label: "Getallen",
    approve: "Goedkeuren",
    deny: "Weigeren",
    not_me: "Dit was ik niet",

    confirm: "Bevestig met uw vingerafdruk, gezicht of pincode.",
    approved: "Aanmelding goedgekeurd. U kunt teruggaan naar waar u inlogt.",
    test_approved: "Goedkeuren op uw telefoon staat aan. Wanneer u de volgende keer \
        inlogt, moet u de inlogpoging goedkeuren op uw telefoon.",
    denied: "Aanmelding geweigerd.",
    denied_not_me: "Aanmelding geweigerd en gemeld. Heeft u niet geprobeerd in te \
        loggen? Meld het dan bij uw helpdesk: iemand kent mogelijk uw wachtwoord.",
    wrong_number: "Dat was niet het getal dat werd getoond waar u inlogt, daarom is de \
        aanmelding geweigerd. Log opnieuw in en kies het getal dat daar wordt getoond.",
    closed: "Dit verzoek is niet meer open: het is al beantwoord of verlopen.",
    not_confirmed: "Niet goedgekeurd: uw vingerafdruk, gezicht of pincode is niet \
        bevestigd. Kies het getal opnieuw om het nog eens te proberen.",
    error: "Er ging iets mis. Probeer het opnieuw of neem contact op met uw helpdesk.",
};
