//! The pure parts of a search: the search term's syntax, the order of results and the
//! `next_batch` tokens (unit-tested).
//!
//! A search term is read like a web search: words must all occur (in any order), `"quoted
//! words"` must occur in that order, `-word` (or `-"quoted words"`) must not occur, and `or`
//! between two words (or quoted groups) lets either occur.

use std::cmp::Ordering;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tantivy::tokenizer::TextAnalyzer;

use super::schema;
use crate::error::{Error, Result};

/// The most words and quoted groups a search term may have.
pub const MAX_ITEMS: usize = 32;
/// The longest search term accepted, in bytes.
pub const MAX_TERM_BYTES: usize = 1000;

/// One word (a single term) or quoted group (a phrase) of a search term, as indexed terms.
pub type Item = Vec<String>;

/// A parsed search term.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// Every group must match; a group matches when any of its items does.
    pub groups: Vec<Vec<Item>>,
    /// No item may match.
    pub excluded: Vec<Item>,
}

impl Parsed {
    /// The terms a match contains (what results highlight).
    pub fn positive_terms(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for term in self.groups.iter().flatten().flatten() {
            if !out.contains(term) {
                out.push(term.clone());
            }
        }
        out
    }
}

/// A word or quoted group as written.
#[derive(Debug, PartialEq)]
struct Raw {
    text: String,
    quoted: bool,
    negated: bool,
}

fn split(term: &str) -> Vec<Raw> {
    let mut out = Vec::new();
    let mut chars = term.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return out;
        };
        let mut negated = false;
        if first == '-' {
            chars.next();
            match chars.peek() {
                Some(c) if !c.is_whitespace() => negated = true,
                // A lone `-` is punctuation.
                _ => continue,
            }
        }
        let mut text = String::new();
        let quoted = chars.next_if_eq(&'"').is_some();
        if quoted {
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                text.push(c);
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                text.push(c);
            }
        }
        out.push(Raw {
            text,
            quoted,
            negated,
        });
    }
}

/// Parses a search term with the index's analyzer. Words that analyze to nothing (punctuation)
/// are dropped.
pub fn parse(analyzer: &mut TextAnalyzer, term: &str) -> Result<Parsed> {
    if term.len() > MAX_TERM_BYTES {
        return Err(Error::InvalidParam(format!(
            "search_term is longer than {MAX_TERM_BYTES} bytes"
        )));
    }
    let mut parsed = Parsed::default();
    let mut or_pending = false;
    let mut items = 0;
    for raw in split(term) {
        if !raw.quoted && !raw.negated && raw.text.eq_ignore_ascii_case("or") {
            or_pending = !parsed.groups.is_empty();
            continue;
        }
        let item = schema::terms(analyzer, &raw.text);
        if item.is_empty() {
            continue;
        }
        items += 1;
        if items > MAX_ITEMS {
            return Err(Error::InvalidParam(format!(
                "search_term has more than {MAX_ITEMS} words"
            )));
        }
        if raw.negated {
            parsed.excluded.push(item);
            continue;
        }
        match parsed.groups.last_mut() {
            Some(group) if or_pending => group.push(item),
            _ => parsed.groups.push(vec![item]),
        }
        or_pending = false;
    }
    Ok(parsed)
}

/// The order of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Best match first (BM25), then newest.
    Rank,
    /// Newest first.
    Recent,
}

impl Order {
    /// The `order_by` of a request (`rank` when absent).
    pub fn parse(raw: Option<&str>) -> Result<Self> {
        match raw {
            None | Some("rank") => Ok(Order::Rank),
            Some("recent") => Ok(Order::Recent),
            Some(other) => Err(Error::InvalidParam(format!(
                "order_by must be rank or recent, not {other:?}"
            ))),
        }
    }

    /// How two hits compare: `Less` when `a` comes first.
    pub fn compare(self, a: &Cursor, b: &Cursor) -> Ordering {
        let newest_first = b.position.cmp(&a.position);
        match self {
            Order::Rank => b.score.total_cmp(&a.score).then(newest_first),
            Order::Recent => newest_first,
        }
    }

    fn letter(self) -> char {
        match self {
            Order::Rank => 'r',
            Order::Recent => 't',
        }
    }
}

/// Where a hit sorts: its score and stream position (unique per event).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cursor {
    pub score: f32,
    pub position: u64,
}

/// What a `next_batch` token continues: the whole search, or one group of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Room(String),
    Sender(String),
}

/// A `next_batch` token: the order it was made for, the last hit examined, and its scope.
#[derive(Debug, Clone, PartialEq)]
pub struct PageToken {
    pub order: Order,
    pub after: Cursor,
    pub scope: Scope,
}

impl PageToken {
    pub fn encode(&self) -> String {
        let scope = match &self.scope {
            Scope::All => String::new(),
            Scope::Room(room) => format!("r{room}"),
            Scope::Sender(sender) => format!("s{sender}"),
        };
        let raw = format!(
            "{}|{:08x}|{}|{scope}",
            self.order.letter(),
            self.after.score.to_bits(),
            self.after.position
        );
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Reads a token; `M_INVALID_PARAM` when it is not one this server made.
    pub fn decode(token: &str) -> Result<Self> {
        let invalid = || Error::InvalidParam("invalid next_batch token".into());
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let raw = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = raw.splitn(4, '|');
        let (Some(order), Some(score), Some(position), Some(scope)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let order = match order {
            "r" => Order::Rank,
            "t" => Order::Recent,
            _ => return Err(invalid()),
        };
        if score.len() != 8 || position.is_empty() || position.starts_with('+') {
            return Err(invalid());
        }
        let score = u32::from_str_radix(score, 16)
            .map(f32::from_bits)
            .map_err(|_| invalid())?;
        if !score.is_finite() {
            return Err(invalid());
        }
        let position = position.parse().map_err(|_| invalid())?;
        let value = |prefix: char| scope.strip_prefix(prefix).filter(|v| !v.is_empty());
        let scope = if scope.is_empty() {
            Scope::All
        } else if let Some(room) = value('r') {
            Scope::Room(room.to_owned())
        } else if let Some(sender) = value('s') {
            Scope::Sender(sender.to_owned())
        } else {
            return Err(invalid());
        };
        Ok(Self {
            order,
            after: Cursor { score, position },
            scope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(term: &str) -> Parsed {
        parse(&mut schema::analyzer(), term).unwrap()
    }

    fn words(list: &[&str]) -> Item {
        list.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn words_phrases_exclusions_and_alternatives() {
        assert_eq!(
            parsed("Martians  and MEN"),
            Parsed {
                groups: vec![
                    vec![words(&["martians"])],
                    vec![words(&["and"])],
                    vec![words(&["men"])]
                ],
                excluded: vec![],
            }
        );
        assert_eq!(
            parsed(r#""red planet" -moon -"blue sky" mars"#),
            Parsed {
                groups: vec![vec![words(&["red", "planet"])], vec![words(&["mars"])]],
                excluded: vec![words(&["moon"]), words(&["blue", "sky"])],
            }
        );
        assert_eq!(
            parsed("cats OR dogs or \"guinea pigs\" fish"),
            Parsed {
                groups: vec![
                    vec![
                        words(&["cats"]),
                        words(&["dogs"]),
                        words(&["guinea", "pigs"])
                    ],
                    vec![words(&["fish"])],
                ],
                excluded: vec![],
            }
        );
        // A word with punctuation inside is a phrase of its parts.
        assert_eq!(
            parsed("e-mail"),
            Parsed {
                groups: vec![vec![words(&["e", "mail"])]],
                excluded: vec![],
            }
        );
    }

    #[test]
    fn odd_terms_are_read_sensibly() {
        assert_eq!(parsed(""), Parsed::default());
        assert_eq!(parsed("  - ! ?? \"\" "), Parsed::default());
        // `or` at either end, or twice, joins nothing.
        assert_eq!(
            parsed("or a or or b or"),
            Parsed {
                groups: vec![vec![words(&["a"]), words(&["b"])]],
                excluded: vec![],
            }
        );
        // An unclosed quote runs to the end.
        assert_eq!(
            parsed("\"open quote"),
            Parsed {
                groups: vec![vec![words(&["open", "quote"])]],
                excluded: vec![],
            }
        );
        assert_eq!(parsed("-x").groups, Vec::<Vec<Item>>::new());
        assert_eq!(parsed("a b a").positive_terms(), ["a", "b"]);
        let long = "word ".repeat(MAX_ITEMS + 1);
        assert!(parse(&mut schema::analyzer(), &long).is_err());
        assert!(parse(&mut schema::analyzer(), &"x".repeat(MAX_TERM_BYTES + 1)).is_err());
    }

    #[test]
    fn orders() {
        assert_eq!(Order::parse(None).unwrap(), Order::Rank);
        assert_eq!(Order::parse(Some("recent")).unwrap(), Order::Recent);
        assert!(Order::parse(Some("oldest")).is_err());
        let a = Cursor {
            score: 2.0,
            position: 1,
        };
        let b = Cursor {
            score: 1.0,
            position: 5,
        };
        let c = Cursor {
            score: 1.0,
            position: 3,
        };
        assert_eq!(Order::Rank.compare(&a, &b), Ordering::Less);
        assert_eq!(Order::Rank.compare(&b, &c), Ordering::Less);
        assert_eq!(Order::Recent.compare(&a, &b), Ordering::Greater);
        assert_eq!(Order::Recent.compare(&b, &b), Ordering::Equal);
    }

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        for scope in [
            Scope::All,
            Scope::Room("!a|b:example.org".into()),
            Scope::Sender("@x:example.org".into()),
        ] {
            let token = PageToken {
                order: Order::Rank,
                after: Cursor {
                    score: 1.25,
                    position: 77,
                },
                scope,
            };
            assert_eq!(PageToken::decode(&token.encode()).unwrap(), token);
        }
        let recent = PageToken {
            order: Order::Recent,
            after: Cursor {
                score: 0.0,
                position: u64::MAX,
            },
            scope: Scope::All,
        };
        assert_eq!(PageToken::decode(&recent.encode()).unwrap(), recent);
        let encode = |raw: &str| URL_SAFE_NO_PAD.encode(raw);
        for bad in [
            String::new(),
            "!!!".into(),
            "s123".into(),
            encode("r|3f800000|5"),
            encode("x|3f800000|5|"),
            encode("r|3f80000|5|"),
            encode("r|7fc00000|5|"),
            encode("r|3f800000|-5|"),
            encode("r|3f800000|+5|"),
            encode("r|3f800000||"),
            encode("r|3f800000|5|q"),
            encode("r|3f800000|5|r"),
            encode("r|3f800000|5|é"),
            encode("r|3f800000|99999999999999999999|"),
        ] {
            assert!(PageToken::decode(&bad).is_err(), "{bad}");
        }
    }
}
