//! JWT test helpers shared by the JWT and TLS tests: keys generated here (RSA 2048 and EC
//! P-256, with aws-lc, independently of the verifier), their JWKS, and tokens signed with them.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

pub const ISS: &str = "https://idp.example.test";
pub const AUD: &str = "mesh7";

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

pub struct TestKey {
    kid: String,
    signer: Signer,
}

impl TestKey {
    pub fn rsa(kid: &str) -> TestKey {
        TestKey {
            kid: kid.to_owned(),
            signer: Signer::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key")),
        }
    }

    pub fn ec(kid: &str) -> TestKey {
        TestKey {
            kid: kid.to_owned(),
            signer: Signer::Ec(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key"),
            ),
        }
    }

    pub fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        match &self.signer {
            Signer::Rsa(k) => {
                let public = k.public_key();
                json!({
                    "kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                    "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
                    "e": B64.encode(public.exponent().big_endian_without_leading_zero()),
                })
            }
            Signer::Ec(k) => {
                // Uncompressed point: 0x04 || x || y.
                let point = k.public_key().as_ref();
                json!({
                    "kty": "EC", "kid": self.kid, "crv": "P-256",
                    "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
                })
            }
        }
    }

    pub fn sign_raw(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .expect("RSA sign");
                sig
            }
            Signer::Ec(k) => k.sign(&rng, message).expect("EC sign").as_ref().to_vec(),
        }
    }

    /// A compact JWS of `claims` under `header`, signed with this key.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self.sign_raw(input.as_bytes());
        format!("{input}.{}", B64.encode(sig))
    }

    /// A token with the usual header (`alg`, `typ`, this key's `kid`).
    pub fn token(&self, claims: &Value) -> String {
        self.sign(
            &json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }

    pub fn bearer(&self, claims: &Value) -> String {
        format!("Bearer {}", self.token(claims))
    }
}

pub fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Valid claims for `sub`: issuer, audience, ten minutes to live.
pub fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISS, "aud": AUD, "iat": now(), "exp": now() + 600})
}
