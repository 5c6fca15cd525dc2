"""The ONE preprocessing function, shared by training, evaluation, golden-file generation and
(ported byte for byte) the Rust service.  See models/MODEL.md, section "Preprocessing".

Steps, in this order:
  1. lowercase the whole text (Python `str.lower()`, full Unicode mapping; Rust `str::to_lowercase()`)
  2. URLs            -> "[URL]"
  3. e-mail addresses -> "[EMAIL]"
  4. numbers         -> "[NUM]"
  5. collapse every run of whitespace to one " " and trim whitespace at both ends

Exact regexes (Python `re`, no flags; identical syntax in the Rust `regex` crate).  WS is the
Unicode White_Space set written out explicitly, so that Python (whose `\\s` differs slightly) and
Rust (`\\s`, `char::is_whitespace`, `str::trim`) agree:

  WS     = [\\t\\n\\x0B\\x0C\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]
           (Rust: [\\t\\n\\x0B\\x0C\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}])
  URL    = (?:https?://|www\\.)[^WS]+
  EMAIL  = [a-z0-9._%+-]+@[a-z0-9-]+(?:\\.[a-z0-9-]+)*\\.[a-z]{2,}
  NUM    = [0-9]+(?:[.,][0-9]+)*
  SPACES = WS+          -> replaced by " ", then the result is trimmed of WS at both ends

The input is lowercased first, so the URL/EMAIL patterns only need lowercase letters; the
replacement tokens stay uppercase because they are inserted after lowercasing.  Because the
tokens contain no digits, replacing numbers after URL/EMAIL never touches them.
"""

import re

WS_CLASS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
WS_CHARS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

URL_RE = re.compile(r"(?:https?://|www\.)[^" + WS_CLASS + r"]+")
EMAIL_RE = re.compile(r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}")
NUM_RE = re.compile(r"[0-9]+(?:[.,][0-9]+)*")
SPACES_RE = re.compile(r"[" + WS_CLASS + r"]+")


def preprocess(text: str) -> str:
    t = text.lower()
    t = URL_RE.sub("[URL]", t)
    t = EMAIL_RE.sub("[EMAIL]", t)
    t = NUM_RE.sub("[NUM]", t)
    t = SPACES_RE.sub(" ", t)
    return t.strip(WS_CHARS)


if __name__ == "__main__":
    samples = [
        "Check https://Example.com/a?b=1 and WWW.Foo.org now!",
        "Mail me at John.Doe+x@Mail.Example.co.uk, ok?",
        "Paid $1,000.50 for 3.5 hours\u00a0\u00a0on flight 1234",
        "   \t\n  ",
    ]
    for s in samples:
        print(repr(s), "->", repr(preprocess(s)))
