//! Sign-in tokens (§3.7 `Authorization: Bearer`): HS256 JWTs signed with `JWT_SECRET`.
//! An access token (short-lived) authenticates requests; a refresh token (long-lived,
//! rotated at each use) gets new ones. Both name their session (`sid`), so revoking the
//! session ends them. A refresh token is never accepted as an access token.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `iss` of every token.
pub const ISSUER: &str = "axontask";
/// `aud` of every token.
pub const AUDIENCE: &str = "axontask-api";

/// Which token it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    /// Authenticates requests.
    Access,
    /// Gets new tokens at `/auth/refresh`.
    Refresh,
}

/// The claims of both kinds of token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: Uuid,
    /// The tenant the token acts for.
    pub tenant_id: Uuid,
    /// The user's role in that tenant.
    pub role: String,
    /// Access or refresh.
    pub token_type: TokenType,
    /// [`ISSUER`].
    pub iss: String,
    /// [`AUDIENCE`].
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// This token's id.
    pub jti: Uuid,
    /// The session (refresh-token family) it belongs to.
    pub sid: Uuid,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past its `exp`.
    #[error("the token has expired; refresh it at /auth/refresh or log in again")]
    Expired,
    /// A refresh token where an access token belongs, or the other way round.
    #[error("this is not an access token; send the access_token of /auth/login or /auth/refresh")]
    NotAccess,
    /// A refresh token was expected.
    #[error("this is not a refresh token; send the refresh_token of /auth/login or /auth/refresh")]
    NotRefresh,
    /// Malformed, wrongly signed, or not for this service.
    #[error("the token is not valid here; log in again")]
    Invalid,
}

/// Who a new pair of tokens is for.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The user.
    pub user: Uuid,
    /// The tenant.
    pub tenant: Uuid,
    /// The user's role there.
    pub role: String,
    /// The session.
    pub session: Uuid,
}

/// Issues and checks tokens.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// How long an access token lives (`JWT_EXPIRY_SECONDS`).
    pub access_ttl: Duration,
    /// How long a session and its refresh tokens live.
    pub refresh_ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_ttl", &self.access_ttl)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Tokens signed with `secret`.
    pub fn new(secret: &str, access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    /// A signed token of `kind` for `subject`, with id `jti`, issued at `now` (Unix
    /// seconds); and its claims.
    pub fn issue(
        &self,
        subject: &Subject,
        kind: TokenType,
        jti: Uuid,
        now: u64,
    ) -> (String, Claims) {
        let ttl = match kind {
            TokenType::Access => self.access_ttl,
            TokenType::Refresh => self.refresh_ttl,
        };
        let claims = Claims {
            sub: subject.user,
            tenant_id: subject.tenant,
            role: subject.role.clone(),
            token_type: kind,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
            jti,
            sid: subject.session,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signs any claims");
        (token, claims)
    }

    /// The claims of a valid, unexpired token of `kind`.
    pub fn verify(&self, token: &str, kind: TokenType) -> Result<Claims, TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?
            .claims;
        match (kind, claims.token_type) {
            (TokenType::Access, TokenType::Refresh) => Err(TokenError::NotAccess),
            (TokenType::Refresh, TokenType::Access) => Err(TokenError::NotRefresh),
            _ => Ok(claims),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(secret: &str) -> Tokens {
        Tokens::new(
            secret,
            Duration::from_secs(900),
            Duration::from_secs(86_400),
        )
    }

    fn subject() -> Subject {
        Subject {
            user: Uuid::now_v7(),
            tenant: Uuid::now_v7(),
            role: "owner".into(),
            session: Uuid::now_v7(),
        }
    }

    #[test]
    fn each_token_is_accepted_only_as_what_it_is() {
        let tokens = tokens("0123456789abcdef0123456789abcdef");
        let now = crate::time::unix_now();
        let (access, claims) = tokens.issue(&subject(), TokenType::Access, Uuid::now_v7(), now);
        assert_eq!(tokens.verify(&access, TokenType::Access), Ok(claims));
        assert_eq!(
            tokens.verify(&access, TokenType::Refresh),
            Err(TokenError::NotRefresh)
        );
        let (refresh, _) = tokens.issue(&subject(), TokenType::Refresh, Uuid::now_v7(), now);
        assert_eq!(
            tokens.verify(&refresh, TokenType::Access),
            Err(TokenError::NotAccess)
        );
        assert!(tokens.verify(&refresh, TokenType::Refresh).is_ok());
    }

    #[test]
    fn expired_foreign_and_garbled_tokens_are_refused() {
        let tokens = tokens("0123456789abcdef0123456789abcdef");
        let old = crate::time::unix_now() - 3_600;
        let (expired, _) = tokens.issue(&subject(), TokenType::Access, Uuid::now_v7(), old);
        assert_eq!(
            tokens.verify(&expired, TokenType::Access),
            Err(TokenError::Expired)
        );
        let other = self::tokens("another-secret-another-secret-another");
        let (foreign, _) = other.issue(
            &subject(),
            TokenType::Access,
            Uuid::now_v7(),
            crate::time::unix_now(),
        );
        assert_eq!(
            tokens.verify(&foreign, TokenType::Access),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            tokens.verify("a.b.c", TokenType::Access),
            Err(TokenError::Invalid)
        );
        let unsigned = format!("{}.", foreign.rsplit_once('.').map_or("", |(head, _)| head));
        assert_eq!(
            tokens.verify(&unsigned, TokenType::Access),
            Err(TokenError::Invalid)
        );
    }
}
