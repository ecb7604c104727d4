# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_otpd_global_optspecs
    string join \n config= socket= h/help V/version
end

function __fish_otpd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_otpd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_otpd_using_subcommand
    set -l cmd (__fish_otpd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c otpd -n "__fish_otpd_needs_command" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_needs_command" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_needs_command" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_needs_command" -s V -l version -d 'Print version'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "serve" -d 'Run the daemon in the foreground (systemd Type=notify)'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "enroll" -d 'Start an enrolment: print the otpauth URI, the secret and a QR code'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "confirm" -d 'Validate a pending enrolment with the first code from the app'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "verify" -d 'Check a code for real (it is used up, like at a login)'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "list" -d 'List enrolled users (never a secret)'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "remove" -d 'Remove a user\'s tokens and counters, or one device of the user'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "resync" -d 'Bring a counter-based (HOTP) token back in step: press its button twice and give both codes'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "import" -d 'Import users from pam_google_authenticator or pam_oath, with their replay state, so that nobody has to enrol again, or hardware tokens from their vendor\'s PSKC file. The files are only read'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "forget" -d 'End a user\'s remembered logins ([remember]): all, or one SSH key\'s'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "unlock" -d 'Clear a user\'s failure counters and backoff (and end remembered logins)'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "recovery-codes" -d 'Replace a user\'s recovery codes and print the new ones once'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "phone" -d 'Register a phone number for codes by text message: texts a code to NUMBER, then registers it with the code (asked on a terminal, or given later with --confirm)'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "check-config" -d 'Check the config file and print the settings in effect'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "keygen" -d 'Write a new random key file (64 hexadecimal digits, mode 0400); never overwrites a file'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "rekey" -d 'Re-seal every record of the store with the key in NEWKEYFILE (created if missing), then install it as key_file. Stop the daemon first. Safe to interrupt: run it again with the same file to finish'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "seal-store" -d 'Seal a store written by an otpd from before encryption at rest (its records are in clear) with the key file, made if missing. Stop the daemon first. Refuses a store that has had a key: records in clear there were put in by someone without the key'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "migrate" -d 'Copy this host\'s sled store (every user, with its replay state and failure counters) into a PostgreSQL database, for a fleet. Stop the daemon first. Safe to run again: identical users are skipped, and nothing is copied if any user is there with different data'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "status" -d 'Show whether the daemon runs, its version, store, users by state and uptime'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "audit" -d 'The audit trail: check that no line was removed, altered or reordered, or print it for a SIEM'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "self" -d 'Your own second factor, run as yourself (not as root): your devices, a new device, your recovery codes, your latest logins. Every change needs a code from one of your active devices, checked like a login'
complete -c otpd -n "__fish_otpd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c otpd -n "__fish_otpd_using_subcommand serve" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand serve" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand serve" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l issuer -d 'Name shown in the app [default: config, else the host name]' -r
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l digits -d 'Digits per code: 6 or 8' -r
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l algorithm -d 'HMAC algorithm: SHA1, SHA256 or SHA512 (only SHA1 works with every app)' -r
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l period -d 'Seconds per code (15-300)' -r
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l qr-png -d 'Also write the QR code to FILE as PNG (mode 0600)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l qr-svg -d 'Also write the QR code to FILE as SVG (mode 0600)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l expires -d 'How long the link stays valid, e.g. 24h, 30m, 7days [default: config, else 24h]' -r
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l device -d 'Name this device (phone, yubikey …): a user who has tokens already gets this one besides them [default: the user\'s first device, "default"]' -r
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l counter -d 'The counter value of the token\'s next code [default: 0]' -r
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l json -d 'Print one JSON object (with the secret) instead of text'
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l force -d 'Replace an active enrolment (or, with --device, that device). The old device keeps working until the new one is confirmed, so the user is never left without a second factor'
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l revoke -d 'With --force: revoke the old device at once (a lost or stolen phone). For the whole user this also revokes the recovery codes and the phone number. Until the new device is confirmed the user cannot log in with a code, and nullok does not let them through either'
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l link -d 'Print a one-time self-enrolment link for the user instead of the secret and QR code (needs [web] public_url)'
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l hotp -d 'A counter-based (HOTP, RFC 4226) token, for hardware keys, instead of a time-based one'
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -l approver -d 'Pair a phone to approve the (enrolled) user\'s sign-ins on: prints a one-time link (ten minutes) as a QR code to scan with the phone\'s camera; with --link, the link only (needs [approve] and [web])'
complete -c otpd -n "__fish_otpd_using_subcommand enroll" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand confirm" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand confirm" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand confirm" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand verify" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand verify" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand verify" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand list" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand list" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand list" -l json -d 'JSON instead of a table'
complete -c otpd -n "__fish_otpd_using_subcommand list" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand remove" -l device -d 'Only this device; the user keeps the others (the last one is refused: replace it with enroll --force, or remove the user)' -r
complete -c otpd -n "__fish_otpd_using_subcommand remove" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand remove" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand remove" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand resync" -l device -d 'Only this device [default: whichever HOTP device the codes fit]' -r
complete -c otpd -n "__fish_otpd_using_subcommand resync" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand resync" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand resync" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand import; and not __fish_seen_subcommand_from google-authenticator oath pskc help" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand import; and not __fish_seen_subcommand_from google-authenticator oath pskc help" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand import; and not __fish_seen_subcommand_from google-authenticator oath pskc help" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand import; and not __fish_seen_subcommand_from google-authenticator oath pskc help" -f -a "google-authenticator" -d 'pam_google_authenticator\'s secret files (~/.google_authenticator): one with --user USER FILE, or every user\'s with --homes'
complete -c otpd -n "__fish_otpd_using_subcommand import; and not __fish_seen_subcommand_from google-authenticator oath pskc help" -f -a "oath" -d 'pam_oath\'s usersfile (/etc/users.oath): every TOTP and HOTP entry'
complete -c otpd -n "__fish_otpd_using_subcommand import; and not __fish_seen_subcommand_from google-authenticator oath pskc help" -f -a "pskc" -d 'A token vendor\'s PSKC file (RFC 6030): its HOTP and TOTP keys, in clear or encrypted, each becoming a device of its user. Every MAC is checked first: one that does not match refuses the whole file'
complete -c otpd -n "__fish_otpd_using_subcommand import; and not __fish_seen_subcommand_from google-authenticator oath pskc help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from google-authenticator" -l user -d 'The user whose FILE it is' -r
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from google-authenticator" -l homes -d 'Every DIR/NAME/.google_authenticator that can be read, as user NAME [default DIR: /home]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from google-authenticator" -l device -d 'The device name of the imported tokens' -r
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from google-authenticator" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from google-authenticator" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from google-authenticator" -l dry-run -d 'Print what would happen; change nothing'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from google-authenticator" -l replace -d 'Replace users who are enrolled in otpd already [default: leave them alone]'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from google-authenticator" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from oath" -l device -d 'The device name of the imported tokens (a user\'s second entry gets NAME-2, and so on)' -r
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from oath" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from oath" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from oath" -l dry-run -d 'Print what would happen; change nothing'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from oath" -l replace -d 'Replace users who are enrolled in otpd already [default: leave them alone]'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from oath" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from pskc" -l users -d 'Which user each key goes to: CSV lines serial,user[,device], by the token\'s serial number (a key without one: its Id). The device is named token-SERIAL when the line names none. Keys of the file on no line are not imported' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from pskc" -l user -d 'Every key of the file becomes a device of this user (named token-SERIAL)' -r
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from pskc" -l key-file -d 'The file is encrypted with a pre-shared key: the file holding it in hexadecimal' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from pskc" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from pskc" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from pskc" -l password -d 'The file is encrypted with a password (PBKDF2): read it from the terminal without echo, or the first line of stdin when stdin is not a terminal'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from pskc" -l dry-run -d 'Print what would happen; change nothing'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from pskc" -l replace -d 'Replace users who are enrolled in otpd already [default: leave them alone]'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from pskc" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "google-authenticator" -d 'pam_google_authenticator\'s secret files (~/.google_authenticator): one with --user USER FILE, or every user\'s with --homes'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "oath" -d 'pam_oath\'s usersfile (/etc/users.oath): every TOTP and HOTP entry'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "pskc" -d 'A token vendor\'s PSKC file (RFC 6030): its HOTP and TOTP keys, in clear or encrypted, each becoming a device of its user. Every MAC is checked first: one that does not match refuses the whole file'
complete -c otpd -n "__fish_otpd_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c otpd -n "__fish_otpd_using_subcommand forget" -l key -d 'Only those of this SSH key (SHA256:… as `ssh-keygen -l` prints it)' -r
complete -c otpd -n "__fish_otpd_using_subcommand forget" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand forget" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand forget" -l all -d 'Every remembered login of the user'
complete -c otpd -n "__fish_otpd_using_subcommand forget" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand unlock" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand unlock" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand unlock" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand recovery-codes" -l count -d 'How many [default: [recovery] count, else 10]' -r
complete -c otpd -n "__fish_otpd_using_subcommand recovery-codes" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand recovery-codes" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand recovery-codes" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand phone" -l confirm -d 'The code from the text message' -r
complete -c otpd -n "__fish_otpd_using_subcommand phone" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand phone" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand phone" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand check-config" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand check-config" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand keygen" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand keygen" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand keygen" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand rekey" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand rekey" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand rekey" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand seal-store" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand seal-store" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand seal-store" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand migrate" -l to -d 'The kind of store to copy into' -r -f -a "postgres\t'A PostgreSQL database (or an engine that speaks its protocol)'"
complete -c otpd -n "__fish_otpd_using_subcommand migrate" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand migrate" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand migrate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c otpd -n "__fish_otpd_using_subcommand status" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand status" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand status" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand audit; and not __fish_seen_subcommand_from verify export help" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand audit; and not __fish_seen_subcommand_from verify export help" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand audit; and not __fish_seen_subcommand_from verify export help" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand audit; and not __fish_seen_subcommand_from verify export help" -f -a "verify" -d 'Check the chain of the audit lines: report the first line removed, altered or reordered and the last good sequence number, and compare the end with the running daemon\'s. Needs the store\'s key (root). Exit status: 0 intact, 1 tampered with, 2 bad usage or nothing to read, 3 intact as far as it goes but its end not compared (the daemon did not answer, or another host\'s lines)'
complete -c otpd -n "__fish_otpd_using_subcommand audit; and not __fish_seen_subcommand_from verify export help" -f -a "export" -d 'Print the audit lines, one per line in their own stable format, or as JSON objects (one per line) with --json. Run as root, the chain is checked first and a trail that does not verify is not exported'
complete -c otpd -n "__fish_otpd_using_subcommand audit; and not __fish_seen_subcommand_from verify export help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from verify" -l journal-file -d 'A journal file instead of the system journal (journalctl --file)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from verify" -l key-file -d 'A key file whose chain key may have chained lines (repeat it for the keys before `otpd rekey`) [default: the configured key]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from verify" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from verify" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from verify" -l journal -d 'The system journal (journalctl SYSLOG_IDENTIFIER=otpd)'
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from export" -l journal-file -d 'A journal file instead of the system journal (journalctl --file)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from export" -l since -d 'Only lines from then on: a time (2026-12-01T08:00:00Z), a date (2026-12-01, UTC) or how long ago (24h, 7d)' -r
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from export" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from export" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from export" -l journal -d 'The system journal (journalctl SYSLOG_IDENTIFIER=otpd)'
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from export" -l json -d 'One JSON object per line'
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Check the chain of the audit lines: report the first line removed, altered or reordered and the last good sequence number, and compare the end with the running daemon\'s. Needs the store\'s key (root). Exit status: 0 intact, 1 tampered with, 2 bad usage or nothing to read, 3 intact as far as it goes but its end not compared (the daemon did not answer, or another host\'s lines)'
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "export" -d 'Print the audit lines, one per line in their own stable format, or as JSON objects (one per line) with --json. Run as root, the chain is checked first and a trail that does not verify is not exported'
complete -c otpd -n "__fish_otpd_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c otpd -n "__fish_otpd_using_subcommand self; and not __fish_seen_subcommand_from devices add-device confirm remove-device recovery-codes activity help" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and not __fish_seen_subcommand_from devices add-device confirm remove-device recovery-codes activity help" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and not __fish_seen_subcommand_from devices add-device confirm remove-device recovery-codes activity help" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand self; and not __fish_seen_subcommand_from devices add-device confirm remove-device recovery-codes activity help" -f -a "devices" -d 'List your devices and paired phones (never a secret)'
complete -c otpd -n "__fish_otpd_using_subcommand self; and not __fish_seen_subcommand_from devices add-device confirm remove-device recovery-codes activity help" -f -a "add-device" -d 'Add a device (a second phone, a key): prints its QR code, then asks for its first code (or confirm later with otpd self confirm)'
complete -c otpd -n "__fish_otpd_using_subcommand self; and not __fish_seen_subcommand_from devices add-device confirm remove-device recovery-codes activity help" -f -a "confirm" -d 'Validate your new device with the first code it shows'
complete -c otpd -n "__fish_otpd_using_subcommand self; and not __fish_seen_subcommand_from devices add-device confirm remove-device recovery-codes activity help" -f -a "remove-device" -d 'Remove one of your devices or paired phones (never your last active device)'
complete -c otpd -n "__fish_otpd_using_subcommand self; and not __fish_seen_subcommand_from devices add-device confirm remove-device recovery-codes activity help" -f -a "recovery-codes" -d 'Replace your recovery codes with a new set, shown once'
complete -c otpd -n "__fish_otpd_using_subcommand self; and not __fish_seen_subcommand_from devices add-device confirm remove-device recovery-codes activity help" -f -a "activity" -d 'Your latest logins and failures (service, source, time): was this you?'
complete -c otpd -n "__fish_otpd_using_subcommand self; and not __fish_seen_subcommand_from devices add-device confirm remove-device recovery-codes activity help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from devices" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from devices" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from devices" -l json -d 'JSON instead of a table'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from devices" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from add-device" -l code -d 'A code from one of your active devices; asked for when omitted' -r
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from add-device" -l recovery-code -d 'A recovery code instead (a lost phone); it is used up, and your administrator is told' -r
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from add-device" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from add-device" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from add-device" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from confirm" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from confirm" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from confirm" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from remove-device" -l code -d 'A code from one of your active devices; asked for when omitted' -r
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from remove-device" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from remove-device" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from remove-device" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from recovery-codes" -l code -d 'A code from one of your active devices; asked for when omitted' -r
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from recovery-codes" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from recovery-codes" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from recovery-codes" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from activity" -l config -d 'Config file [default: /etc/otpd/otpd.toml]' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from activity" -l socket -d 'The daemon\'s socket (overrides the config)' -r -F
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from activity" -l json -d 'JSON instead of a table'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from activity" -s h -l help -d 'Print help'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from help" -f -a "devices" -d 'List your devices and paired phones (never a secret)'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from help" -f -a "add-device" -d 'Add a device (a second phone, a key): prints its QR code, then asks for its first code (or confirm later with otpd self confirm)'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from help" -f -a "confirm" -d 'Validate your new device with the first code it shows'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from help" -f -a "remove-device" -d 'Remove one of your devices or paired phones (never your last active device)'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from help" -f -a "recovery-codes" -d 'Replace your recovery codes with a new set, shown once'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from help" -f -a "activity" -d 'Your latest logins and failures (service, source, time): was this you?'
complete -c otpd -n "__fish_otpd_using_subcommand self; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "serve" -d 'Run the daemon in the foreground (systemd Type=notify)'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "enroll" -d 'Start an enrolment: print the otpauth URI, the secret and a QR code'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "confirm" -d 'Validate a pending enrolment with the first code from the app'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "verify" -d 'Check a code for real (it is used up, like at a login)'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "list" -d 'List enrolled users (never a secret)'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "remove" -d 'Remove a user\'s tokens and counters, or one device of the user'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "resync" -d 'Bring a counter-based (HOTP) token back in step: press its button twice and give both codes'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "import" -d 'Import users from pam_google_authenticator or pam_oath, with their replay state, so that nobody has to enrol again, or hardware tokens from their vendor\'s PSKC file. The files are only read'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "forget" -d 'End a user\'s remembered logins ([remember]): all, or one SSH key\'s'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "unlock" -d 'Clear a user\'s failure counters and backoff (and end remembered logins)'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "recovery-codes" -d 'Replace a user\'s recovery codes and print the new ones once'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "phone" -d 'Register a phone number for codes by text message: texts a code to NUMBER, then registers it with the code (asked on a terminal, or given later with --confirm)'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "check-config" -d 'Check the config file and print the settings in effect'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "keygen" -d 'Write a new random key file (64 hexadecimal digits, mode 0400); never overwrites a file'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "rekey" -d 'Re-seal every record of the store with the key in NEWKEYFILE (created if missing), then install it as key_file. Stop the daemon first. Safe to interrupt: run it again with the same file to finish'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "seal-store" -d 'Seal a store written by an otpd from before encryption at rest (its records are in clear) with the key file, made if missing. Stop the daemon first. Refuses a store that has had a key: records in clear there were put in by someone without the key'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "migrate" -d 'Copy this host\'s sled store (every user, with its replay state and failure counters) into a PostgreSQL database, for a fleet. Stop the daemon first. Safe to run again: identical users are skipped, and nothing is copied if any user is there with different data'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "status" -d 'Show whether the daemon runs, its version, store, users by state and uptime'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "audit" -d 'The audit trail: check that no line was removed, altered or reordered, or print it for a SIEM'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "self" -d 'Your own second factor, run as yourself (not as root): your devices, a new device, your recovery codes, your latest logins. Every change needs a code from one of your active devices, checked like a login'
complete -c otpd -n "__fish_otpd_using_subcommand help; and not __fish_seen_subcommand_from serve enroll confirm verify list remove resync import forget unlock recovery-codes phone check-config keygen rekey seal-store migrate status audit self help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c otpd -n "__fish_otpd_using_subcommand help; and __fish_seen_subcommand_from import" -f -a "google-authenticator" -d 'pam_google_authenticator\'s secret files (~/.google_authenticator): one with --user USER FILE, or every user\'s with --homes'
complete -c otpd -n "__fish_otpd_using_subcommand help; and __fish_seen_subcommand_from import" -f -a "oath" -d 'pam_oath\'s usersfile (/etc/users.oath): every TOTP and HOTP entry'
complete -c otpd -n "__fish_otpd_using_subcommand help; and __fish_seen_subcommand_from import" -f -a "pskc" -d 'A token vendor\'s PSKC file (RFC 6030): its HOTP and TOTP keys, in clear or encrypted, each becoming a device of its user. Every MAC is checked first: one that does not match refuses the whole file'
complete -c otpd -n "__fish_otpd_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "verify" -d 'Check the chain of the audit lines: report the first line removed, altered or reordered and the last good sequence number, and compare the end with the running daemon\'s. Needs the store\'s key (root). Exit status: 0 intact, 1 tampered with, 2 bad usage or nothing to read, 3 intact as far as it goes but its end not compared (the daemon did not answer, or another host\'s lines)'
complete -c otpd -n "__fish_otpd_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "export" -d 'Print the audit lines, one per line in their own stable format, or as JSON objects (one per line) with --json. Run as root, the chain is checked first and a trail that does not verify is not exported'
complete -c otpd -n "__fish_otpd_using_subcommand help; and __fish_seen_subcommand_from self" -f -a "devices" -d 'List your devices and paired phones (never a secret)'
complete -c otpd -n "__fish_otpd_using_subcommand help; and __fish_seen_subcommand_from self" -f -a "add-device" -d 'Add a device (a second phone, a key): prints its QR code, then asks for its first code (or confirm later with otpd self confirm)'
complete -c otpd -n "__fish_otpd_using_subcommand help; and __fish_seen_subcommand_from self" -f -a "confirm" -d 'Validate your new device with the first code it shows'
complete -c otpd -n "__fish_otpd_using_subcommand help; and __fish_seen_subcommand_from self" -f -a "remove-device" -d 'Remove one of your devices or paired phones (never your last active device)'
complete -c otpd -n "__fish_otpd_using_subcommand help; and __fish_seen_subcommand_from self" -f -a "recovery-codes" -d 'Replace your recovery codes with a new set, shown once'
complete -c otpd -n "__fish_otpd_using_subcommand help; and __fish_seen_subcommand_from self" -f -a "activity" -d 'Your latest logins and failures (service, source, time): was this you?'
