//! The ways a request can be authenticated, in the order Kong tries them.

use serde::Deserialize;

/// An auth method (Kong's `auth_methods`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Session,
    Bearer,
    Introspection,
    Userinfo,
    RefreshToken,
    Password,
    ClientCredentials,
    AuthorizationCode,
}

impl AuthMethod {
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Session => "session",
            AuthMethod::Bearer => "bearer",
            AuthMethod::Introspection => "introspection",
            AuthMethod::Userinfo => "userinfo",
            AuthMethod::RefreshToken => "refresh_token",
            AuthMethod::Password => "password",
            AuthMethod::ClientCredentials => "client_credentials",
            AuthMethod::AuthorizationCode => "authorization_code",
        }
    }

    /// Methods this build implements, in Kong's order.
    pub const SUPPORTED: [AuthMethod; 8] = [
        AuthMethod::Session,
        AuthMethod::Bearer,
        AuthMethod::Introspection,
        AuthMethod::Userinfo,
        AuthMethod::RefreshToken,
        AuthMethod::Password,
        AuthMethod::ClientCredentials,
        AuthMethod::AuthorizationCode,
    ];

    /// The method of this name.
    pub fn from_name(name: &str) -> Option<AuthMethod> {
        AuthMethod::SUPPORTED.into_iter().find(|m| m.name() == name)
    }

    /// Methods whose credential is a bearer access token.
    pub fn takes_bearer(self) -> bool {
        matches!(self, AuthMethod::Bearer | AuthMethod::Introspection | AuthMethod::Userinfo)
    }
}

/// A set of auth methods (a bit per method).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Methods(u16);

impl Methods {
    pub fn with(self, m: AuthMethod) -> Methods {
        Methods(self.0 | 1 << m as u16)
    }

    pub fn has(self, m: AuthMethod) -> bool {
        self.0 & (1 << m as u16) != 0
    }

    /// In Kong's order.
    pub fn iter(self) -> impl Iterator<Item = AuthMethod> {
        AuthMethod::SUPPORTED.into_iter().filter(move |m| self.has(*m))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn takes_bearer(self) -> bool {
        self.iter().any(AuthMethod::takes_bearer)
    }

    /// Whether a session cookie is read (session or authorization_code).
    pub fn uses_sessions(self) -> bool {
        self.has(AuthMethod::Session) || self.has(AuthMethod::AuthorizationCode)
    }
}

impl FromIterator<AuthMethod> for Methods {
    fn from_iter<I: IntoIterator<Item = AuthMethod>>(iter: I) -> Self {
        iter.into_iter().fold(Methods::default(), Methods::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_iterate_in_kong_order() {
        let m: Methods = [AuthMethod::ClientCredentials, AuthMethod::Password, AuthMethod::Bearer].into_iter().collect();
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![AuthMethod::Bearer, AuthMethod::Password, AuthMethod::ClientCredentials]);
        assert!(m.takes_bearer() && !m.uses_sessions());
        assert_eq!(AuthMethod::from_name("refresh_token"), Some(AuthMethod::RefreshToken));
        assert_eq!(AuthMethod::from_name("kong_oauth2"), None);
    }
}
