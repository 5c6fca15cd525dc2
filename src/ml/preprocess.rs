//! Text preprocessing (R3.6–3.9), byte for byte the function the model was trained with
//! (`models/train/preprocess.py`): lowercase; URLs → `[URL]`; e-mail addresses → `[EMAIL]`; numbers →
//! `[NUM]`; whitespace runs → one space, trimmed. `models/golden.json` holds texts and their expected
//! output, checked by the Python script and by the tests here.

use std::sync::LazyLock;

use regex::Regex;

/// Unicode White_Space written out, so Python's `re` and Rust's `regex` agree on it exactly.
const WS: &str =
    r"\t\n\x0B\x0C\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}";

struct Patterns {
    url: Regex,
    email: Regex,
    number: Regex,
    spaces: Regex,
}

// The patterns are literals checked by the tests below; building them cannot fail at run time.
#[allow(clippy::expect_used)]
static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| Patterns {
    url: Regex::new(&format!(r"(?:https?://|www\.)[^{WS}]+")).expect("url pattern"),
    email: Regex::new(r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}").expect("email pattern"),
    number: Regex::new(r"[0-9]+(?:[.,][0-9]+)*").expect("number pattern"),
    spaces: Regex::new(&format!("[{WS}]+")).expect("spaces pattern"),
});

fn is_ws(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ' | '\u{85}' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// Normalizes a text exactly as the model saw its training data.
pub fn preprocess(text: &str) -> String {
    let p = &*PATTERNS;
    let lower = text.to_lowercase();
    let urls = p.url.replace_all(&lower, "[URL]");
    let emails = p.email.replace_all(&urls, "[EMAIL]");
    let numbers = p.number.replace_all(&emails, "[NUM]");
    let spaced = p.spaces.replace_all(&numbers, " ");
    spaced.trim_matches(is_ws).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_and_normalizes_whitespace() {
        assert_eq!(preprocess("  Hello\t\tWORLD \n again  "), "hello world again");
        assert_eq!(preprocess("a\u{A0}\u{A0}b\u{3000}c"), "a b c");
        assert_eq!(preprocess(" \t\n "), "");
    }

    #[test]
    fn replaces_urls_emails_and_numbers() {
        assert_eq!(
            preprocess("Check https://Example.com/a?b=1 and WWW.Foo.org now!"),
            "check [URL] and [URL] now!"
        );
        assert_eq!(
            preprocess("Mail me at John.Doe+x@Mail.Example.co.uk, ok?"),
            "mail me at [EMAIL], ok?"
        );
        assert_eq!(
            preprocess("Paid $1,000.50 for 3.5 hours\u{A0}\u{A0}on flight 1234"),
            "paid $[NUM] for [NUM] hours on flight [NUM]"
        );
        assert_eq!(preprocess("call 555-1234"), "call [NUM]-[NUM]");
    }

    #[test]
    fn tokens_survive_later_steps() {
        // A URL with digits becomes one token; the number step never touches the inserted tokens.
        assert_eq!(
            preprocess("see http://x.io/42 or mail a1@b2.com 7"),
            "see [URL] or mail [EMAIL] [NUM]"
        );
    }
}
