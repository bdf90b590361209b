//! postcard decoding for bytes read from a repository: the whole input must
//! be one value, so trailing garbage is an error rather than ignored.

use serde::de::DeserializeOwned;

pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} unexpected bytes after the value", rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rejects_trailing_bytes() {
        let mut bytes = postcard::to_allocvec(&(1u32, 2u8)).unwrap();
        assert_eq!(super::decode_exact::<(u32, u8)>(&bytes).unwrap(), (1, 2));
        bytes.push(0);
        assert!(super::decode_exact::<(u32, u8)>(&bytes).is_err());
    }
}
