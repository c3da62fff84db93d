//! Calico's selector language: `app == "web" && !has(canary) || tier in {"db", "cache"}`.
//!
//! Grammar, by precedence from loosest: `a || b`, `a && b`, `!a`, then the terms `all()`,
//! `global()`, `has(k)`, `k == "v"`, `k != "v"`, `k in {"v", …}`, `k not in {"v", …}`,
//! `k contains "s"`, `k starts with "s"`, `k ends with "s"`, and parentheses. Strings take single
//! or double quotes. As in Calico, `k != "v"` and `k not in {…}` also match when `k` is absent,
//! and the empty selector is `all()`. Errors name the column (1-based, in characters).

use std::collections::BTreeSet;
use std::fmt;

use crate::selector::Labels;

/// A parsed Calico selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    All,
    /// Matches only non-namespaced resources (host endpoints, global network sets); never a pod.
    Global,
    Has(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Contains(String, String),
    StartsWith(String, String),
    EndsWith(String, String),
    Not(Box<Selector>),
    And(Box<Selector>, Box<Selector>),
    Or(Box<Selector>, Box<Selector>),
}

/// A syntax error, with the column where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct SelectorError {
    /// 1-based character column.
    pub column: usize,
    pub message: String,
}

impl Selector {
    /// Whether a namespaced endpoint (a pod) with `labels` is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Selector::All => true,
            Selector::Global => false,
            Selector::Has(k) => labels.contains_key(k),
            Selector::Equals(k, v) => labels.get(k) == Some(v),
            Selector::NotEquals(k, v) => labels.get(k) != Some(v),
            Selector::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Selector::NotIn(k, set) => labels.get(k).is_none_or(|v| !set.contains(v)),
            Selector::Contains(k, s) => labels.get(k).is_some_and(|v| v.contains(s.as_str())),
            Selector::StartsWith(k, s) => labels.get(k).is_some_and(|v| v.starts_with(s.as_str())),
            Selector::EndsWith(k, s) => labels.get(k).is_some_and(|v| v.ends_with(s.as_str())),
            Selector::Not(a) => !a.matches(labels),
            Selector::And(a, b) => a.matches(labels) && b.matches(labels),
            Selector::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }
}

/// Parses a selector; the empty (or all-blank) selector is `all()`.
pub fn parse(text: &str) -> Result<Selector, SelectorError> {
    let chars: Vec<char> = text.chars().collect();
    let mut parser = Parser { chars, at: 0 };
    parser.skip_blanks();
    if parser.at == parser.chars.len() {
        return Ok(Selector::All);
    }
    let selector = parser.or()?;
    parser.skip_blanks();
    if parser.at < parser.chars.len() {
        return Err(parser.error(format!(
            "unexpected {:?} after a complete selector (expected && or ||)",
            parser.chars[parser.at]
        )));
    }
    Ok(selector)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

impl Parser {
    fn error(&self, message: impl Into<String>) -> SelectorError {
        SelectorError {
            column: self.at + 1,
            message: message.into(),
        }
    }

    fn skip_blanks(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_blanks();
        self.chars.get(self.at).copied()
    }

    /// Consumes `token` (after blanks) if it is next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_blanks();
        let end = self.at + token.chars().count();
        if end <= self.chars.len() && self.chars[self.at..end].iter().copied().eq(token.chars()) {
            self.at = end;
            true
        } else {
            false
        }
    }

    /// Consumes a word (`in`, `not`, `contains`, …) only when it is not the start of a longer
    /// identifier.
    fn eat_word(&mut self, word: &str) -> bool {
        let start = self.at;
        if self.eat(word) && !self.chars.get(self.at).copied().is_some_and(is_key_char) {
            return true;
        }
        self.at = start;
        false
    }

    fn expect(&mut self, token: &str) -> Result<(), SelectorError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(format!("expected {token:?}")))
        }
    }

    fn or(&mut self) -> Result<Selector, SelectorError> {
        let mut left = self.and()?;
        while self.eat("||") {
            let right = self.and()?;
            left = Selector::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Selector, SelectorError> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            let right = self.unary()?;
            left = Selector::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Selector, SelectorError> {
        // `!=` never starts a term, so a leading `!` is always negation.
        if self.eat("!") {
            return Ok(Selector::Not(Box::new(self.unary()?)));
        }
        self.term()
    }

    fn term(&mut self) -> Result<Selector, SelectorError> {
        match self.peek() {
            None => return Err(self.error("expected a selector, found the end")),
            Some('(') => {
                self.at += 1;
                let inner = self.or()?;
                self.expect(")")?;
                return Ok(inner);
            }
            _ => {}
        }
        if self.eat("all(") {
            self.expect(")")?;
            return Ok(Selector::All);
        }
        if self.eat("global(") {
            self.expect(")")?;
            return Ok(Selector::Global);
        }
        if self.eat("has(") {
            let key = self.key()?;
            self.expect(")")?;
            return Ok(Selector::Has(key));
        }
        let key = self.key()?;
        if self.eat("==") {
            return Ok(Selector::Equals(key, self.string()?));
        }
        if self.eat("!=") {
            return Ok(Selector::NotEquals(key, self.string()?));
        }
        if self.eat_word("in") {
            return Ok(Selector::In(key, self.set()?));
        }
        if self.eat_word("not") {
            if !self.eat_word("in") {
                self.skip_blanks();
                return Err(self.error("expected \"in\" after \"not\""));
            }
            return Ok(Selector::NotIn(key, self.set()?));
        }
        if self.eat_word("contains") {
            return Ok(Selector::Contains(key, self.string()?));
        }
        if self.eat_word("starts") {
            if !self.eat_word("with") {
                self.skip_blanks();
                return Err(self.error("expected \"with\" after \"starts\""));
            }
            return Ok(Selector::StartsWith(key, self.string()?));
        }
        if self.eat_word("ends") {
            if !self.eat_word("with") {
                self.skip_blanks();
                return Err(self.error("expected \"with\" after \"ends\""));
            }
            return Ok(Selector::EndsWith(key, self.string()?));
        }
        Err(self.error(format!(
            "expected an operator after label {key:?}: ==, !=, in, not in, contains, starts with or ends with"
        )))
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        self.skip_blanks();
        let start = self.at;
        while self.chars.get(self.at).copied().is_some_and(is_key_char) {
            self.at += 1;
        }
        if self.at == start {
            return Err(match self.chars.get(self.at) {
                Some(c) => self.error(format!("expected a label name, found {c:?}")),
                None => self.error("expected a label name, found the end"),
            });
        }
        Ok(self.chars[start..self.at].iter().collect())
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        let quote = match self.peek() {
            Some(q @ ('"' | '\'')) => q,
            Some(c) => return Err(self.error(format!("expected a quoted string, found {c:?}"))),
            None => return Err(self.error("expected a quoted string, found the end")),
        };
        let open = self.at;
        self.at += 1;
        let start = self.at;
        while self.chars.get(self.at).is_some_and(|&c| c != quote) {
            self.at += 1;
        }
        if self.at == self.chars.len() {
            self.at = open;
            return Err(self.error(format!("string opened here is never closed with {quote}")));
        }
        let value = self.chars[start..self.at].iter().collect();
        self.at += 1;
        Ok(value)
    }

    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        self.expect("{")?;
        let mut values = BTreeSet::new();
        if self.eat("}") {
            return Ok(values);
        }
        loop {
            values.insert(self.string()?);
            if self.eat("}") {
                return Ok(values);
            }
            if !self.eat(",") {
                return Err(self.error("expected \",\" or \"}\" in a set"));
            }
        }
    }
}

impl fmt::Display for Selector {
    /// The canonical text; parsing it gives back the same selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Calico strings have no escapes: quote with whichever quote the value lacks.
        struct Quoted<'a>(&'a str);
        impl fmt::Display for Quoted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let q = if self.0.contains('"') { '\'' } else { '"' };
                write!(f, "{q}{}{q}", self.0)
            }
        }
        fn set(values: &BTreeSet<String>) -> String {
            values
                .iter()
                .map(|v| Quoted(v).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
        match self {
            Selector::All => write!(f, "all()"),
            Selector::Global => write!(f, "global()"),
            Selector::Has(k) => write!(f, "has({k})"),
            Selector::Equals(k, v) => write!(f, "{k} == {}", Quoted(v)),
            Selector::NotEquals(k, v) => write!(f, "{k} != {}", Quoted(v)),
            Selector::In(k, s) => write!(f, "{k} in {{{}}}", set(s)),
            Selector::NotIn(k, s) => write!(f, "{k} not in {{{}}}", set(s)),
            Selector::Contains(k, s) => write!(f, "{k} contains {}", Quoted(s)),
            Selector::StartsWith(k, s) => write!(f, "{k} starts with {}", Quoted(s)),
            Selector::EndsWith(k, s) => write!(f, "{k} ends with {}", Quoted(s)),
            Selector::Not(a) => write!(f, "!({a})"),
            Selector::And(a, b) => write!(f, "({a} && {b})"),
            Selector::Or(a, b) => write!(f, "({a} || {b})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arbitrary_selector() -> impl Strategy<Value = Selector> {
        let key = "[a-z][a-z0-9./_-]{0,6}";
        // Values may hold blanks, operators, backslashes and either quote (not both: Calico
        // strings have no escapes, so such a value cannot be written at all).
        let value = || {
            prop_oneof![
                "[a-z0-9 '&|!(){}=,.\\\\-]{0,6}",
                "[a-z0-9 \"&|!(){}=,.-]{0,6}"
            ]
        };
        let leaf = prop_oneof![
            Just(Selector::All),
            Just(Selector::Global),
            key.prop_map(Selector::Has),
            (key, value()).prop_map(|(k, v)| Selector::Equals(k, v)),
            (key, value()).prop_map(|(k, v)| Selector::NotEquals(k, v)),
            (key, prop::collection::btree_set(value(), 0..3)).prop_map(|(k, s)| Selector::In(k, s)),
            (key, prop::collection::btree_set(value(), 0..3))
                .prop_map(|(k, s)| Selector::NotIn(k, s)),
            (key, value()).prop_map(|(k, v)| Selector::Contains(k, v)),
            (key, value()).prop_map(|(k, v)| Selector::StartsWith(k, v)),
            (key, value()).prop_map(|(k, v)| Selector::EndsWith(k, v)),
        ];
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|a| Selector::Not(Box::new(a))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Selector::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Selector::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    proptest! {
        #[test]
        fn printing_and_parsing_round_trip(selector in arbitrary_selector()) {
            let text = selector.to_string();
            prop_assert_eq!(parse(&text).map_err(|e| format!("{text}: {e}")), Ok(selector));
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        parse(selector)
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
            .matches(&labels(pairs))
    }

    fn error_column(selector: &str) -> usize {
        parse(selector).expect_err(selector).column
    }

    #[test]
    fn equality_and_inequality_treat_a_missing_label_as_not_equal() {
        assert!(selects("app == 'web'", &[("app", "web")]));
        assert!(!selects("app == \"web\"", &[("app", "db")]));
        assert!(!selects("app == 'web'", &[]));
        assert!(selects("app != 'web'", &[("app", "db")]));
        assert!(selects("app != 'web'", &[]));
        assert!(!selects("app != 'web'", &[("app", "web")]));
    }

    #[test]
    fn set_membership_and_its_negation() {
        assert!(selects("tier in {'db', \"cache\"}", &[("tier", "cache")]));
        assert!(!selects("tier in {'db'}", &[("tier", "web")]));
        assert!(!selects("tier in {'db'}", &[]));
        assert!(!selects("tier in {}", &[("tier", "db")]));
        assert!(selects("tier not in {'db'}", &[("tier", "web")]));
        assert!(selects("tier not in {'db'}", &[]));
        assert!(!selects("tier not in {'db', 'web'}", &[("tier", "web")]));
    }

    #[test]
    fn has_all_and_global() {
        assert!(selects("has(canary)", &[("canary", "")]));
        assert!(!selects("has(canary)", &[]));
        assert!(selects("!has(canary)", &[]));
        assert!(selects("all()", &[]));
        assert!(selects("", &[]));
        assert!(selects("   ", &[("a", "b")]));
        assert!(!selects("global()", &[("a", "b")]), "pods are namespaced");
        assert!(selects("!global()", &[]));
    }

    #[test]
    fn string_operators() {
        assert!(selects(
            "image contains 'nginx'",
            &[("image", "docker.io/nginx:1")]
        ));
        assert!(selects("name starts with 'web-'", &[("name", "web-1")]));
        assert!(!selects("name starts with 'web-'", &[("name", "api-1")]));
        assert!(selects("name ends with \"-1\"", &[("name", "web-1")]));
        assert!(!selects("name ends with '-1'", &[]));
    }

    #[test]
    fn and_binds_tighter_than_or_and_not_tighter_than_and() {
        // a || b && c  ==  a || (b && c)
        assert!(selects("a == 'x' || b == 'x' && c == 'x'", &[("a", "x")]));
        assert!(!selects(
            "(a == 'x' || b == 'x') && c == 'x'",
            &[("a", "x")]
        ));
        // !a && b  ==  (!a) && b
        assert!(selects("!a == 'x' && b == 'x'", &[("b", "x")]));
        assert!(!selects(
            "!(a == 'x' && b == 'x')",
            &[("a", "x"), ("b", "x")]
        ));
        assert!(selects("!!has(a)", &[("a", "1")]));
    }

    #[test]
    fn keys_may_carry_prefixes_and_dots() {
        assert!(selects(
            "projectcalico.org/name == 'kube-system' && kubernetes.io/metadata.name in {'kube-system'}",
            &[
                ("projectcalico.org/name", "kube-system"),
                ("kubernetes.io/metadata.name", "kube-system")
            ]
        ));
    }

    #[test]
    fn words_are_not_mistaken_for_label_prefixes() {
        // A label named `inside` is not the operator `in`.
        assert!(parse("app inside {'x'}").is_err());
        assert!(selects("index == '1'", &[("index", "1")]));
    }

    #[test]
    fn syntax_errors_name_their_column() {
        assert_eq!(error_column("app == web"), 8);
        assert_eq!(error_column("app = 'web'"), 5);
        assert_eq!(error_column("app == 'web"), 8);
        assert_eq!(error_column("has(app"), 8);
        assert_eq!(error_column("(app == 'x'"), 12);
        assert_eq!(error_column("app == 'x' app == 'y'"), 12);
        assert_eq!(error_column("tier in {'a' 'b'}"), 14);
        assert_eq!(error_column("tier not {'a'}"), 10);
        assert_eq!(error_column("&& app == 'x'"), 1);
        assert_eq!(error_column("name starts 'x'"), 13);
        assert_eq!(error_column("app == 'x' ||"), 14);
        let e = parse("app == web").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("column 8: expected a quoted string"),
            "{e}"
        );
    }

    #[test]
    fn the_canonical_text_parses_back_to_the_same_selector() {
        for text in [
            "a == 'x' || b != \"y\" && !has(c)",
            "t in {'a', 'b'} && t not in {} || all() || !global()",
            "n starts with 'a' && n ends with 'z' || n contains 'm'",
        ] {
            let selector = parse(text).unwrap();
            assert_eq!(
                parse(&selector.to_string()).unwrap(),
                selector,
                "{selector}"
            );
        }
    }
}
