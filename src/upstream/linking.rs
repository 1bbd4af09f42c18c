//! The linking rules: what a sign-in with an upstream identity may do. Plain data in, a
//! decision out, so every rule is tested on its own.
//!
//! An identity is found by (provider, subject), never by email. An unknown identity whose
//! email matches a local account links to it only when the upstream asserts the email is
//! verified AND the person proves control of the local account (signing in to it, or a
//! single-use link sent to its verified address) — unless the provider is set to
//! `link_by_email = "auto"`, which skips the proof but still requires both emails verified.
//! Merely controlling an upstream account with someone's (unverified) email gets nothing.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    /// Link by email only after the person proves the local account is theirs.
    #[default]
    Confirm,
    /// Link by email at once (both emails verified): for an upstream that is authoritative
    /// for the email domain, such as a company's Google Workspace.
    Auto,
    /// Never link by email; the person links from their account page.
    Never,
}

/// A local account whose email equals the upstream email.
#[derive(Debug, Clone)]
pub struct EmailMatch {
    pub user_id: String,
    pub email_verified: bool,
}

/// What the sign-in situation is.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    /// The account this (provider, subject) is already linked to.
    pub linked_to: Option<&'a str>,
    /// The signed-in person, when they started the flow from their account page to link.
    pub linking_as: Option<&'a str>,
    /// A local account with the same email, if any.
    pub email_match: Option<&'a EmailMatch>,
    /// Whether the upstream asserts its email is verified (Google's `email_verified`,
    /// GitHub's verified primary address).
    pub upstream_email_verified: bool,
    /// Whether the upstream gave an email at all.
    pub has_email: bool,
    pub mode: LinkMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The identity is linked to this account: sign in.
    SignIn(String),
    /// Link the identity to this account and sign in (or stay signed in).
    Link(String),
    /// Ask the person to prove the account with this id is theirs, then link.
    NeedProof(String),
    /// A new account from the upstream profile.
    Create,
    /// Refuse, with the reason shown to the person.
    Refuse(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Linking from the account page, but the identity belongs to another account.
    LinkedElsewhere,
    /// An account has this email but it cannot be linked automatically (mode never, or the
    /// upstream does not vouch for the email).
    EmailTaken,
    /// No email from upstream, so no account can be made.
    NoEmail,
}

pub fn decide(s: &Situation<'_>) -> Decision {
    // 1. A known identity means exactly its account, whatever its email says now.
    if let Some(owner) = s.linked_to {
        return match s.linking_as {
            Some(me) if me != owner => Decision::Refuse(Refusal::LinkedElsewhere),
            _ => Decision::SignIn(owner.to_owned()),
        };
    }
    // 2. A signed-in person linking from their account page has proved who they are.
    if let Some(me) = s.linking_as {
        return Decision::Link(me.to_owned());
    }
    // 3. An unknown identity whose email matches an account.
    if let Some(found) = s.email_match {
        if !s.upstream_email_verified || s.mode == LinkMode::Never {
            return Decision::Refuse(Refusal::EmailTaken);
        }
        if s.mode == LinkMode::Auto && found.email_verified {
            return Decision::Link(found.user_id.clone());
        }
        return Decision::NeedProof(found.user_id.clone());
    }
    // 4. Nobody has this email: a new account.
    if !s.has_email {
        return Decision::Refuse(Refusal::NoEmail);
    }
    Decision::Create
}

#[cfg(test)]
mod tests {
    use super::*;

    fn situation<'a>(m: &'a EmailMatch) -> Situation<'a> {
        Situation {
            linked_to: None,
            linking_as: None,
            email_match: Some(m),
            upstream_email_verified: true,
            has_email: true,
            mode: LinkMode::Confirm,
        }
    }

    #[test]
    fn a_linked_identity_signs_in_to_its_account_only() {
        let m = EmailMatch {
            user_id: "other".into(),
            email_verified: true,
        };
        let s = Situation {
            linked_to: Some("owner"),
            ..situation(&m)
        };
        assert_eq!(
            decide(&s),
            Decision::SignIn("owner".into()),
            "found by subject, not by email"
        );
        let s = Situation {
            linked_to: Some("owner"),
            linking_as: Some("me"),
            ..situation(&m)
        };
        assert_eq!(
            decide(&s),
            Decision::Refuse(Refusal::LinkedElsewhere),
            "never moved silently"
        );
        let s = Situation {
            linked_to: Some("me"),
            linking_as: Some("me"),
            ..situation(&m)
        };
        assert_eq!(decide(&s), Decision::SignIn("me".into()));
    }

    #[test]
    fn a_matching_verified_email_needs_proof_in_confirm_mode() {
        let m = EmailMatch {
            user_id: "victim".into(),
            email_verified: true,
        };
        assert_eq!(decide(&situation(&m)), Decision::NeedProof("victim".into()));
    }

    #[test]
    fn an_unverified_upstream_email_never_links() {
        let m = EmailMatch {
            user_id: "victim".into(),
            email_verified: true,
        };
        for mode in [LinkMode::Confirm, LinkMode::Auto, LinkMode::Never] {
            let s = Situation {
                upstream_email_verified: false,
                mode,
                ..situation(&m)
            };
            assert_eq!(
                decide(&s),
                Decision::Refuse(Refusal::EmailTaken),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn auto_links_only_when_both_emails_are_verified() {
        let verified = EmailMatch {
            user_id: "u".into(),
            email_verified: true,
        };
        let s = Situation {
            mode: LinkMode::Auto,
            ..situation(&verified)
        };
        assert_eq!(decide(&s), Decision::Link("u".into()));
        let unverified = EmailMatch {
            user_id: "u".into(),
            email_verified: false,
        };
        let s = Situation {
            mode: LinkMode::Auto,
            ..situation(&unverified)
        };
        assert_eq!(
            decide(&s),
            Decision::NeedProof("u".into()),
            "a local unverified email still needs proof"
        );
    }

    #[test]
    fn never_mode_refuses_email_links() {
        let m = EmailMatch {
            user_id: "u".into(),
            email_verified: true,
        };
        let s = Situation {
            mode: LinkMode::Never,
            ..situation(&m)
        };
        assert_eq!(decide(&s), Decision::Refuse(Refusal::EmailTaken));
    }

    #[test]
    fn linking_from_the_account_page_and_new_accounts() {
        let s = Situation {
            linked_to: None,
            linking_as: Some("me"),
            email_match: None,
            upstream_email_verified: false,
            has_email: false,
            mode: LinkMode::Never,
        };
        assert_eq!(decide(&s), Decision::Link("me".into()));
        let s = Situation {
            linking_as: None,
            has_email: true,
            ..s
        };
        assert_eq!(decide(&s), Decision::Create);
        let s = Situation {
            has_email: false,
            ..s
        };
        assert_eq!(decide(&s), Decision::Refuse(Refusal::NoEmail));
    }
}
