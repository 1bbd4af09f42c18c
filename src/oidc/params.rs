//! Request parameters of the protocol endpoints, parsed strictly.
//!
//! RFC 6749 §3.1 and §3.2: "Request and response parameters MUST NOT be included more than
//! once." serde's form extractor silently keeps one of two values; this keeps them all so a
//! repeated parameter can be refused.

use std::collections::HashMap;

use url::form_urlencoded;

#[derive(Debug, Default, Clone)]
pub struct Params {
    values: HashMap<String, Vec<String>>,
}

/// Why a parameter could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    Repeated(String),
    Invalid(String),
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Repeated(name) => write!(f, "the parameter {name} is repeated"),
            Self::Invalid(name) => write!(f, "the parameter {name} has an invalid value"),
        }
    }
}

impl Params {
    /// Parses `application/x-www-form-urlencoded` bytes (a body or a query string).
    pub fn parse(raw: &[u8]) -> Self {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw) {
            values
                .entry(k.into_owned())
                .or_default()
                .push(v.into_owned());
        }
        Self { values }
    }

    /// The parameter's value; empty values count as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Result<Option<&str>, ParamError> {
        match self.values.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([one]) => {
                if one.chars().any(|c| c.is_control()) {
                    return Err(ParamError::Invalid(name.to_owned()));
                }
                Ok(Some(one.as_str()).filter(|v| !v.is_empty()))
            }
            Some(_) => Err(ParamError::Repeated(name.to_owned())),
        }
    }

    pub fn require(&self, name: &str) -> Result<&str, ParamError> {
        self.get(name)?
            .ok_or_else(|| ParamError::Invalid(format!("{name} (missing)")))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_control_characters_are_refused() {
        let p = Params::parse(b"a=1&b=2&b=3&c=&d=x%00y&e=h%C3%A9");
        assert_eq!(p.get("a").unwrap(), Some("1"));
        assert_eq!(p.get("b"), Err(ParamError::Repeated("b".into())));
        assert_eq!(p.get("c").unwrap(), None);
        assert!(p.get("d").is_err());
        assert_eq!(p.get("e").unwrap(), Some("hé"));
        assert_eq!(p.get("z").unwrap(), None);
    }
}
