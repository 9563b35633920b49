use crate::{Observation, Part, Value};

/// A one-part observation holding a vector.
pub fn vector_observation(name: &str, values: Vec<f32>) -> Observation {
    vec![Part {
        name: name.to_string(),
        value: Value::Vector(values),
    }]
}

/// The value of the part called `name`.
pub fn part<'a>(observation: &'a [Part], name: &str) -> Option<&'a Value> {
    observation
        .iter()
        .find(|p| p.name == name)
        .map(|p| &p.value)
}

/// The vector part called `name`.
pub fn vector_part<'a>(observation: &'a [Part], name: &str) -> Option<&'a [f32]> {
    match part(observation, name)? {
        Value::Vector(v) => Some(v),
        _ => None,
    }
}

/// The text part called `name`.
pub fn text_part<'a>(observation: &'a [Part], name: &str) -> Option<&'a str> {
    match part(observation, name)? {
        Value::Text(t) => Some(t),
        _ => None,
    }
}

/// All vector parts of an observation, concatenated in order.
pub fn flatten_vectors(observation: &[Part], out: &mut Vec<f32>) {
    for p in observation {
        if let Value::Vector(v) = &p.value {
            out.extend_from_slice(v);
        }
    }
}

/// Parses a config string of the form `key=value,key=value` (spaces ignored).
/// An empty string gives no pairs.
pub fn parse_config(config: &str) -> Result<Vec<(String, String)>, String> {
    config
        .split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
            None => Err(format!("config entry `{kv}` is not of the form key=value")),
        })
        .collect()
}

/// Parses one numeric config value, naming the key on error.
pub fn parse_value<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("config key `{key}`: cannot parse `{value}`"))
}

/// A small, fast, deterministic random number generator (SplitMix64).
/// Seed it from the seed the host gives you; never from a clock.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in `[low, high)`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
}

/// The seed of the `k`-th copy's next episode, derived from its current seed.
pub fn next_seed(seed: u64) -> u64 {
    Rng::new(seed ^ 0xA076_1D64_78BD_642F).next_u64()
}

/// `{"success": true}` or `{}`.
pub fn success_info(success: bool) -> String {
    if success {
        r#"{"success":true}"#.to_string()
    } else {
        "{}".to_string()
    }
}
