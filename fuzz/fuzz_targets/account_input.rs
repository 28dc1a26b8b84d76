//! Register and login fields: username, email, password, and the login name.
#![no_main]

use auth::domain::{Email, Login, Password, Username};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    if let Ok(username) = Username::parse(raw) {
        // Accepted names are canonical: parsing them again gives the same name.
        let again = Username::parse(username.as_str()).expect("a parsed name parses again");
        assert_eq!(again.as_str(), username.as_str());
    }
    if let Ok(email) = Email::parse(raw) {
        let again = Email::parse(email.as_str()).expect("a parsed email parses again");
        assert_eq!(again.as_str(), email.as_str());
    }
    let _ = Password::parse(raw);
    let _ = Login::parse(raw);
});
