//! Sparse byte planes: how a delta's XOR words travel. Little-endian words of `width` bytes
//! are split into `width` planes (byte 0 of every word, then byte 1, ...); each plane is a
//! bitmap of its nonzero bytes (bit i of byte i / 8 for word i) followed by those bytes in
//! order. Between two nearby versions the sign, exponent and top mantissa bits rarely change,
//! so the XOR's high planes are almost all bitmap, and a bf16 XOR is mostly zero words.

/// Appends the planes of `words` (`width`-byte little-endian words) to `out`.
pub fn encode(words: &[u8], width: usize, out: &mut Vec<u8>) {
    let n = words.len() / width;
    for p in 0..width {
        let bitmap_at = out.len();
        out.resize(bitmap_at + n.div_ceil(8) + n, 0);
        let mut k = bitmap_at + n.div_ceil(8);
        for i in 0..n {
            let b = words[i * width + p];
            let nonzero = (b != 0) as usize;
            out[bitmap_at + i / 8] |= (nonzero as u8) << (i % 8);
            // Written always, kept only when nonzero: no branch on the data.
            out[k] = b;
            k += nonzero;
        }
        out.truncate(k);
    }
}

/// Decodes the planes of `n` words of `width` bytes from `data` into `words`
/// (`n * width` bytes, overwritten); a description of what is wrong otherwise.
pub fn decode(data: &[u8], width: usize, n: usize, words: &mut [u8]) -> Result<(), String> {
    if words.len() != n * width {
        return Err(format!("{} bytes for {n} words of {width}", words.len()));
    }
    let map_len = n.div_ceil(8);
    let mut at = 0;
    for p in 0..width {
        let bitmap = data
            .get(at..at + map_len)
            .ok_or_else(|| format!("plane {p}: bitmap cut short"))?;
        at += map_len;
        if !n.is_multiple_of(8) && bitmap[map_len - 1] >> (n % 8) != 0 {
            return Err(format!("plane {p}: bits set past word {n}"));
        }
        let ones: usize = bitmap.iter().map(|b| b.count_ones() as usize).sum();
        let bytes = data
            .get(at..at + ones)
            .ok_or_else(|| format!("plane {p}: {ones} bytes announced, fewer sent"))?;
        at += ones;
        let mut k = 0;
        for (j, &m) in bitmap.iter().enumerate() {
            let base = j * 8;
            for bit in 0..8 {
                let i = base + bit;
                if i >= n {
                    break;
                }
                words[i * width + p] = if m >> bit & 1 == 1 {
                    k += 1;
                    bytes[k - 1]
                } else {
                    0
                };
            }
        }
    }
    if at != data.len() {
        return Err(format!("{} bytes past the last plane", data.len() - at));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn planes_round_trip(words in proptest::collection::vec(any::<u8>(), 0..200), wide in any::<bool>()) {
            let width = if wide { 4 } else { 2 };
            let words = &words[..words.len() / width * width];
            let mut data = Vec::new();
            encode(words, width, &mut data);
            let mut back = vec![0xAB; words.len()];
            decode(&data, width, words.len() / width, &mut back).unwrap();
            prop_assert_eq!(&back[..], words);
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panic(data in proptest::collection::vec(any::<u8>(), 0..64), n in 0usize..40) {
            let mut words = vec![0; n * 4];
            let _ = decode(&data, 4, n, &mut words);
        }
    }

    #[test]
    fn zero_words_cost_only_their_bitmap() {
        let mut data = Vec::new();
        encode(&[0u8; 64], 4, &mut data);
        assert_eq!(
            data.len(),
            4 * 2,
            "16 zero words: four planes of a 2-byte bitmap"
        );
    }
}
