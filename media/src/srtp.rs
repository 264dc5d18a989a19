//! The fan-out send path: RTP packets built and SRTP-protected straight into
//! the driver's buffer, with no allocation.
//!
//! str0m builds every outgoing SRTP datagram in fresh `Vec`s (about a dozen
//! allocations per packet), which at 10,000 listeners × 50 packets/s is the
//! allocator's busiest loop. Audio the engine sends (the program and
//! mix-minus) takes this path instead; str0m keeps everything else of the
//! session: ICE, DTLS, RTCP, and the talkers' incoming SRTP.
//!
//! To protect packets ourselves we need the session's SRTP master keys,
//! which str0m keeps private. It does let us supply the DTLS implementation,
//! so [`capturing_provider`] wraps the real one and copies the DTLS-SRTP
//! keying material (RFC 5764 §4.2) into a [`KeySlot`] that the engine hands
//! to each session as it is built. From it [`SrtpSender`] derives the
//! session keys (RFC 3711 §4.3, the AES-CM PRF; RFC 7714 §11 for GCM) and
//! protects with the crypto provider's own ciphers: AEAD_AES_256_GCM and
//! AEAD_AES_128_GCM (RFC 7714) or AES_CM_128_HMAC_SHA1_80 (RFC 3711), the
//! three profiles str0m negotiates.
//!
//! str0m still owns the SSRC (it is in the SDP answer) and answers the
//! receiver's RTCP about it; it just never writes a packet on it.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arrayvec::ArrayVec;
use str0m::config::{CryptoProvider, DtlsCert, DtlsVersion};
use str0m::crypto::dtls::{
    DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, ProtocolVersion, SrtpProfile,
};
use str0m::crypto::{
    AeadAes128Gcm, AeadAes128GcmCipher, AeadAes256Gcm, AeadAes256GcmCipher, Aes128CmSha1_80,
    Aes128CmSha1_80Cipher, CryptoError, Sha1HmacProvider, SrtpProvider,
};

/// A fixed RTP header: V=2, no padding, no extension, no CSRCs.
pub const RTP_HEADER_LEN: usize = 12;
/// The largest authentication tag of the three profiles (GCM's).
const MAX_TAG_LEN: usize = 16;
/// aws-lc's AES-CTR wants this much room after the plaintext.
const CTR_SLACK: usize = 15;
/// Bytes a buffer needs beyond the payload: header, tag, cipher slack.
pub const OVERHEAD: usize = RTP_HEADER_LEN + MAX_TAG_LEN + CTR_SLACK;

/// RFC 3711 §4.3.1 key derivation labels, SRTP and SRTCP (§4.3.2).
const LABEL_ENCRYPTION: u8 = 0x00;
const LABEL_AUTH: u8 = 0x01;
const LABEL_SALT: u8 = 0x02;
const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
const LABEL_RTCP_AUTH: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;

/// The key derivation labels of one protocol.
#[derive(Debug, Clone, Copy)]
struct Labels {
    encryption: u8,
    auth: u8,
    salt: u8,
}

const SRTP_LABELS: Labels = Labels {
    encryption: LABEL_ENCRYPTION,
    auth: LABEL_AUTH,
    salt: LABEL_SALT,
};
const SRTCP_LABELS: Labels = Labels {
    encryption: LABEL_RTCP_ENCRYPTION,
    auth: LABEL_RTCP_AUTH,
    salt: LABEL_RTCP_SALT,
};
/// SRTCP's clear part: the first RTCP header and the sender's SSRC.
const SRTCP_HEADER_LEN: usize = 8;
/// The E flag and the 31-bit SRTCP index, after the encrypted part.
const SRTCP_INDEX_LEN: usize = 4;
/// Room [`SrtcpReceiver::unprotect`] needs beyond the packet's length.
pub const SRTCP_SLACK: usize = CTR_SLACK;
/// Sending SSRCs of one peer whose SRTCP indices are tracked.
const SRTCP_SSRCS: usize = 4;

/// The DTLS-SRTP export of one session: both directions' master keys and
/// salts, `client key | server key | client salt | server salt`.
#[derive(Clone)]
pub struct ExportedKeys {
    material: Vec<u8>,
    profile: SrtpProfile,
    /// We were the DTLS client: our keys are the left-hand ones.
    client: bool,
}

impl ExportedKeys {
    /// Keys as a DTLS-SRTP export delivers them, for a sender made outside
    /// a session (the SRTP benchmark); `client` when we were the DTLS client.
    pub fn new(material: Vec<u8>, profile: SrtpProfile, client: bool) -> Self {
        Self {
            material,
            profile,
            client,
        }
    }
}

impl ExportedKeys {
    /// We were the DTLS client: the peer sent the handshake's final flight.
    pub fn we_were_client(&self) -> bool {
        self.client
    }
}

impl std::fmt::Debug for ExportedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("ExportedKeys")
            .field("profile", &self.profile)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Where a session's DTLS instance leaves its keys, once, when the handshake
/// completes.
pub(crate) type KeySlot = Arc<OnceLock<ExportedKeys>>;

thread_local! {
    /// The slot for the DTLS instance the next `Rtc` build creates. str0m
    /// creates it synchronously inside `RtcConfig::build`, on this thread.
    static NEXT_SLOT: RefCell<Option<KeySlot>> = const { RefCell::new(None) };
}

/// Builds an `Rtc` whose DTLS keys land in the returned slot. `None` if the
/// build did not create a DTLS instance through our provider.
pub(crate) fn build_capturing<T>(build: impl FnOnce() -> T) -> (T, Option<KeySlot>) {
    let slot = KeySlot::default();
    NEXT_SLOT.with(|next| *next.borrow_mut() = Some(Arc::clone(&slot)));
    let built = build();
    let unclaimed = NEXT_SLOT.with(|next| next.borrow_mut().take());
    (built, unclaimed.is_none().then_some(slot))
}

/// The crypto provider of the build's features, with its DTLS provider
/// wrapped so that keys are captured. (Providers are `&'static`, so the
/// wrapper is one static around the one base provider there is.)
pub(crate) fn capturing_provider() -> CryptoProvider {
    static CAPTURING: OnceLock<CapturingDtls> = OnceLock::new();
    let base = str0m::crypto::from_feature_flags();
    let inner = base.dtls_provider;
    let dtls: &'static CapturingDtls = CAPTURING.get_or_init(|| CapturingDtls { inner });
    CryptoProvider {
        dtls_provider: dtls,
        ..base
    }
}

#[derive(Debug)]
struct CapturingDtls {
    inner: &'static dyn DtlsProvider,
}

impl DtlsProvider for CapturingDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let inner = self.inner.new_dtls(cert, now, dtls_version, mtu)?;
        let slot = NEXT_SLOT.with(|next| next.borrow_mut().take());
        Ok(Box::new(CapturingInstance { inner, slot }))
    }
}

#[derive(Debug)]
struct CapturingInstance {
    inner: Box<dyn DtlsInstance>,
    /// `None` for an `Rtc` built outside [`build_capturing`].
    slot: Option<KeySlot>,
}

impl DtlsInstance for CapturingInstance {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let client = self.inner.is_active();
        let out = self.inner.poll_output(buf);
        if let (DtlsOutput::KeyingMaterial(material, profile), Some(slot)) = (&out, &self.slot) {
            let _ = slot.set(ExportedKeys {
                material: material.to_vec(),
                profile: *profile,
                client,
            });
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}

/// Why a sender could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("SRTP profile {0:?} is not supported")]
    UnsupportedProfile(SrtpProfile),
    #[error("DTLS-SRTP keying material has {got} bytes, {profile:?} needs {want}")]
    KeyingMaterialLength {
        profile: SrtpProfile,
        got: usize,
        want: usize,
    },
    #[error("the output buffer is too small for the packet")]
    BufferTooSmall,
    #[error("the cipher failed")]
    Cipher,
}

/// Whose half of the export: ours protects what we send, the peer's what
/// it sends us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Ours,
    Peer,
}

/// A master key and salt, picked from the export.
fn master<const K: usize, const S: usize>(
    keys: &ExportedKeys,
    side: Side,
) -> Result<([u8; K], [u8; S]), SrtpError> {
    let want = 2 * (K + S);
    if keys.material.len() != want {
        return Err(SrtpError::KeyingMaterialLength {
            profile: keys.profile,
            got: keys.material.len(),
            want,
        });
    }
    // The DTLS client's keys are the left-hand ones.
    let left = keys.client == (side == Side::Ours);
    let (key_at, salt_at) = if left { (0, 2 * K) } else { (K, 2 * K + S) };
    let mut key = [0; K];
    let mut salt = [0; S];
    key.copy_from_slice(&keys.material[key_at..key_at + K]);
    salt.copy_from_slice(&keys.material[salt_at..salt_at + S]);
    Ok((key, salt))
}

/// The AES-CM PRF of RFC 3711 §4.3.3 with key derivation rate 0: the
/// keystream of AES-CTR keyed by the master key, from the IV
/// `(master_salt XOR label << 48) << 16`. GCM's 96-bit salt is the leading
/// bytes of the same 112-bit field (RFC 7714 §11).
fn derive(
    provider: &dyn SrtpProvider,
    master_key: &[u8],
    master_salt: &[u8],
    label: u8,
    out: &mut [u8],
) {
    let mut block = [0u8; 16];
    block[..master_salt.len()].copy_from_slice(master_salt);
    block[7] ^= label;
    // The ECB round may pad its output to two blocks.
    let mut keystream = [0u8; 32];
    for (counter, chunk) in out.chunks_mut(16).enumerate() {
        block[14..].copy_from_slice(&(counter as u16).to_be_bytes());
        match master_key.len() {
            32 => provider.srtp_aes_256_ecb_round(master_key, &block, &mut keystream),
            _ => provider.srtp_aes_128_ecb_round(master_key, &block, &mut keystream),
        }
        chunk.copy_from_slice(&keystream[..chunk.len()]);
    }
}

/// The session cipher of one stream: our SRTP (encrypting) or the peer's
/// SRTCP (decrypting).
enum Cipher {
    Gcm128 {
        cipher: Box<dyn AeadAes128GcmCipher>,
        salt: [u8; AeadAes128Gcm::SALT_LEN],
    },
    Gcm256 {
        cipher: Box<dyn AeadAes256GcmCipher>,
        salt: [u8; AeadAes256Gcm::SALT_LEN],
    },
    CmSha1 {
        cipher: Box<dyn Aes128CmSha1_80Cipher>,
        salt: [u8; Aes128CmSha1_80::SALT_LEN],
        auth_key: [u8; Aes128CmSha1_80::HMAC_KEY_LEN],
        hmac: &'static dyn Sha1HmacProvider,
    },
}

impl Cipher {
    /// Session keys derived with `labels` from `side`'s master key: ours
    /// encrypt, the peer's decrypt.
    fn new(
        crypto: &CryptoProvider,
        keys: &ExportedKeys,
        side: Side,
        labels: Labels,
    ) -> Result<Self, SrtpError> {
        let srtp = crypto.srtp_provider;
        let encrypt = side == Side::Ours;
        Ok(match keys.profile {
            SrtpProfile::AEAD_AES_128_GCM => {
                let (master, master_salt) = master::<16, 12>(keys, side)?;
                let (mut key, mut salt) = ([0; 16], [0; 12]);
                derive(srtp, &master, &master_salt, labels.encryption, &mut key);
                derive(srtp, &master, &master_salt, labels.salt, &mut salt);
                Cipher::Gcm128 {
                    cipher: srtp.aead_aes_128_gcm().create_cipher(key, encrypt),
                    salt,
                }
            }
            SrtpProfile::AEAD_AES_256_GCM => {
                let (master, master_salt) = master::<32, 12>(keys, side)?;
                let (mut key, mut salt) = ([0; 32], [0; 12]);
                derive(srtp, &master, &master_salt, labels.encryption, &mut key);
                derive(srtp, &master, &master_salt, labels.salt, &mut salt);
                Cipher::Gcm256 {
                    cipher: srtp.aead_aes_256_gcm().create_cipher(key, encrypt),
                    salt,
                }
            }
            SrtpProfile::AES128_CM_SHA1_80 => {
                let (master, master_salt) = master::<16, 14>(keys, side)?;
                let (mut key, mut salt, mut auth_key) = ([0; 16], [0; 14], [0; 20]);
                derive(srtp, &master, &master_salt, labels.encryption, &mut key);
                derive(srtp, &master, &master_salt, labels.salt, &mut salt);
                derive(srtp, &master, &master_salt, labels.auth, &mut auth_key);
                Cipher::CmSha1 {
                    cipher: srtp.aes_128_cm_sha1_80().create_cipher(key, encrypt),
                    salt,
                    auth_key,
                    hmac: crypto.sha1_hmac_provider,
                }
            }
            other => return Err(SrtpError::UnsupportedProfile(other)),
        })
    }

    fn tag_len(&self) -> usize {
        match self {
            Cipher::Gcm128 { .. } => AeadAes128Gcm::TAG_LEN,
            Cipher::Gcm256 { .. } => AeadAes256Gcm::TAG_LEN,
            Cipher::CmSha1 { .. } => Aes128CmSha1_80::HMAC_TAG_LEN,
        }
    }

    /// Protects `payload` after the header already in `out[..12]`; returns
    /// the datagram's length. `out` has room for [`OVERHEAD`] more bytes
    /// than the payload ([`SrtpSender::write`] checks).
    fn protect(
        &mut self,
        ssrc: u32,
        index: u64,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SrtpError> {
        let body = RTP_HEADER_LEN + payload.len();
        let len = body + self.tag_len();
        let (header, rest) = out.split_at_mut(RTP_HEADER_LEN);
        let roc = (index >> 16) as u32;
        let seq = index as u16;
        match self {
            Cipher::Gcm128 { cipher, salt } => {
                let iv = AeadAes128Gcm::rtp_iv(*salt, ssrc, roc, seq);
                cipher.encrypt(&iv, header, payload, rest)
            }
            Cipher::Gcm256 { cipher, salt } => {
                let iv = AeadAes256Gcm::rtp_iv(*salt, ssrc, roc, seq);
                cipher.encrypt(&iv, header, payload, rest)
            }
            Cipher::CmSha1 {
                cipher,
                salt,
                auth_key,
                hmac,
            } => {
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                cipher
                    .encrypt(&iv, payload, &mut rest[..payload.len() + CTR_SLACK])
                    .map(|()| {
                        let sign = |key: &[u8], parts: &[&[u8]]| hmac.sha1_hmac(key, parts);
                        Aes128CmSha1_80::rtp_hmac(sign, auth_key, out, index, body);
                    })
            }
        }
        .map_err(|_| SrtpError::Cipher)?;
        Ok(len)
    }
}

/// One outgoing audio stream of a session: RTP numbering and SRTP state.
pub struct SrtpSender {
    cipher: Cipher,
    ssrc: u32,
    /// SRTP packet index of the next packet: ROC << 16 | sequence number.
    index: u64,
    /// RTP time right after the last packet sent; a jump means a new talkspurt.
    expected_rtp_time: Option<u32>,
}

impl SrtpSender {
    pub fn new(
        crypto: &CryptoProvider,
        keys: &ExportedKeys,
        ssrc: u32,
        first_seq: u16,
    ) -> Result<Self, SrtpError> {
        Ok(Self {
            cipher: Cipher::new(crypto, keys, Side::Ours, SRTP_LABELS)?,
            ssrc,
            index: u64::from(first_seq),
            expected_rtp_time: None,
        })
    }

    /// The SSRC of the stream: what the receiver's reports are about.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Writes one SRTP packet carrying `payload` of payload type `pt`
    /// (covering `samples` at 48 kHz from `rtp_time`) into `out`; returns
    /// its length. The marker
    /// bit flags the first packet of a talkspurt (RFC 3551 §4.1), which
    /// tells the receiver's jitter buffer it may adapt.
    pub fn write(
        &mut self,
        pt: u8,
        rtp_time: u32,
        samples: u32,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SrtpError> {
        if out.len() < payload.len() + OVERHEAD {
            return Err(SrtpError::BufferTooSmall);
        }
        let marker = self.expected_rtp_time != Some(rtp_time);
        out[0] = 0x80;
        out[1] = (u8::from(marker) << 7) | (pt & 0x7f);
        out[2..4].copy_from_slice(&(self.index as u16).to_be_bytes());
        out[4..8].copy_from_slice(&rtp_time.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let len = self.cipher.protect(self.ssrc, self.index, payload, out)?;
        self.index += 1;
        self.expected_rtp_time = Some(rtp_time.wrapping_add(samples));
        Ok(len)
    }
}

/// Why an incoming SRTCP packet was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtcpError {
    #[error("too short for SRTCP")]
    TooShort,
    #[error("the output buffer is too small for the packet")]
    BufferTooSmall,
    #[error("authentication failed")]
    Unauthentic,
    #[error("SRTCP index {0} was seen before")]
    Replayed(u32),
}

/// Reads the peer's SRTCP (RFC 3711 §3.4, RFC 7714 §9) for the loss it
/// reports about our audio (see `rtcp`). str0m reads the same packets for
/// itself but keeps what they say; this second reading costs a decrypt
/// about once a second per peer, into the caller's buffer, no allocation.
pub struct SrtcpReceiver {
    cipher: Cipher,
    /// The highest SRTCP index accepted per sending SSRC (each has its own
    /// index, RFC 3711 §3.2.3: webrtc-rs numbers its SR and RR apart): an
    /// older one is a replay, or reordered, which for a loss report is as
    /// good as stale.
    highest: ArrayVec<(u32, u32), SRTCP_SSRCS>,
}

impl SrtcpReceiver {
    pub fn new(crypto: &CryptoProvider, keys: &ExportedKeys) -> Result<Self, SrtpError> {
        let cipher = Cipher::new(crypto, keys, Side::Peer, SRTCP_LABELS)?;
        Ok(Self {
            cipher,
            highest: ArrayVec::new(),
        })
    }

    /// Authenticates and decrypts one SRTCP packet into `out` (at least
    /// [`SRTCP_SLACK`] bytes longer than `packet`); returns the plain
    /// compound RTCP packet.
    pub fn unprotect<'a>(
        &mut self,
        packet: &[u8],
        out: &'a mut [u8],
    ) -> Result<&'a [u8], SrtcpError> {
        if out.len() < packet.len() + SRTCP_SLACK {
            return Err(SrtcpError::BufferTooSmall);
        }
        let tag_len = self.cipher.tag_len();
        if packet.len() < SRTCP_HEADER_LEN + SRTCP_INDEX_LEN + tag_len {
            return Err(SrtcpError::TooShort);
        }
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        // Where the E flag and index sit: before the HMAC tag (RFC 3711),
        // at the very end after the GCM tag (RFC 7714).
        let index_at = match self.cipher {
            Cipher::CmSha1 { .. } => packet.len() - tag_len - SRTCP_INDEX_LEN,
            _ => packet.len() - SRTCP_INDEX_LEN,
        };
        let e_and_index: [u8; 4] = packet[index_at..index_at + SRTCP_INDEX_LEN]
            .try_into()
            .expect("four bytes");
        let e_and_index = u32::from_be_bytes(e_and_index);
        let encrypted = e_and_index >> 31 == 1;
        let index = e_and_index & 0x7fff_ffff;
        let seen = self.highest.iter().position(|&(s, _)| s == ssrc);
        if seen.is_some_and(|at| index <= self.highest[at].1) {
            return Err(SrtcpError::Replayed(index));
        }
        let header = &packet[..SRTCP_HEADER_LEN];
        let plain_len = match &mut self.cipher {
            Cipher::CmSha1 {
                cipher,
                salt,
                auth_key,
                hmac,
            } => {
                let (signed, tag) = packet.split_at(packet.len() - tag_len);
                let sign = |key: &[u8], parts: &[&[u8]]| hmac.sha1_hmac(key, parts);
                if !Aes128CmSha1_80::rtcp_verify(sign, auth_key, signed, tag) {
                    return Err(SrtcpError::Unauthentic);
                }
                let body = &packet[SRTCP_HEADER_LEN..index_at];
                if encrypted {
                    let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, u64::from(index));
                    let to = &mut out[SRTCP_HEADER_LEN..index_at + CTR_SLACK];
                    cipher
                        .decrypt(&iv, body, to)
                        .map_err(|_| SrtcpError::Unauthentic)?;
                } else {
                    out[SRTCP_HEADER_LEN..index_at].copy_from_slice(body);
                }
                index_at
            }
            Cipher::Gcm128 { cipher, salt } => {
                let iv = AeadAes128Gcm::rtcp_iv(*salt, ssrc, index);
                gcm_open(packet, index_at, encrypted, out, |aads, input, to| {
                    cipher.decrypt(&iv, aads, input, to)
                })?
            }
            Cipher::Gcm256 { cipher, salt } => {
                let iv = AeadAes256Gcm::rtcp_iv(*salt, ssrc, index);
                gcm_open(packet, index_at, encrypted, out, |aads, input, to| {
                    cipher.decrypt(&iv, aads, input, to)
                })?
            }
        };
        out[..SRTCP_HEADER_LEN].copy_from_slice(header);
        match seen {
            Some(at) => self.highest[at].1 = index,
            None => {
                if self.highest.is_full() {
                    // A peer sends RTCP from one SSRC or two; forget the oldest.
                    self.highest.remove(0);
                }
                self.highest.push((ssrc, index));
            }
        }
        Ok(&out[..plain_len])
    }
}

/// RFC 7714 §9: an encrypted packet's AAD is its clear header and the
/// E flag and index; an unencrypted one is all AAD, the tag its only
/// "ciphertext". Returns the plain length written to `out`.
fn gcm_open(
    packet: &[u8],
    index_at: usize,
    encrypted: bool,
    out: &mut [u8],
    decrypt: impl FnOnce(&[&[u8]], &[u8], &mut [u8]) -> Result<usize, CryptoError>,
) -> Result<usize, SrtcpError> {
    let tag_at = index_at - AeadAes128Gcm::TAG_LEN;
    let trailer = &packet[index_at..];
    if encrypted {
        let mut aad = [0u8; AeadAes128Gcm::RTCP_AAD_LEN];
        aad[..SRTCP_HEADER_LEN].copy_from_slice(&packet[..SRTCP_HEADER_LEN]);
        aad[SRTCP_HEADER_LEN..].copy_from_slice(trailer);
        let n = decrypt(
            &[&aad],
            &packet[SRTCP_HEADER_LEN..index_at],
            &mut out[SRTCP_HEADER_LEN..],
        )
        .map_err(|_| SrtcpError::Unauthentic)?;
        Ok(SRTCP_HEADER_LEN + n)
    } else {
        decrypt(
            &[&packet[..tag_at], trailer],
            &packet[tag_at..index_at],
            &mut [],
        )
        .map_err(|_| SrtcpError::Unauthentic)?;
        out[SRTCP_HEADER_LEN..tag_at].copy_from_slice(&packet[SRTCP_HEADER_LEN..tag_at]);
        Ok(tag_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        str0m::crypto::from_feature_flags()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// RFC 3711 Appendix B.3: the key derivation test vectors.
    #[test]
    fn key_derivation_matches_rfc3711_b3() {
        let p = provider();
        let master = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut key = [0u8; 16];
        derive(p.srtp_provider, &master, &salt, LABEL_ENCRYPTION, &mut key);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut session_salt = [0u8; 14];
        derive(
            p.srtp_provider,
            &master,
            &salt,
            LABEL_SALT,
            &mut session_salt,
        );
        assert_eq!(session_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 20];
        derive(p.srtp_provider, &master, &salt, LABEL_AUTH, &mut auth);
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    fn exported(profile: SrtpProfile, key_len: usize, salt_len: usize) -> ExportedKeys {
        ExportedKeys {
            material: (0..2 * (key_len + salt_len)).map(|i| i as u8).collect(),
            profile,
            client: false,
        }
    }

    #[test]
    fn the_server_uses_the_right_hand_keys_and_the_client_the_left() {
        let mut keys = exported(SrtpProfile::AES128_CM_SHA1_80, 16, 14);
        let (key, salt) = master::<16, 14>(&keys, Side::Ours).unwrap();
        assert_eq!((key[0], salt[0]), (16, 46));
        keys.client = true;
        let (key, salt) = master::<16, 14>(&keys, Side::Ours).unwrap();
        assert_eq!((key[0], salt[0]), (0, 32));
        keys.material.pop();
        assert!(matches!(
            master::<16, 14>(&keys, Side::Ours),
            Err(SrtpError::KeyingMaterialLength { got: 59, .. })
        ));
    }

    /// Decrypts what `write` made with the provider's own decrypting
    /// ciphers, keyed the same way: header intact, payload restored, tag valid.
    #[test]
    fn every_profile_round_trips_and_numbers_packets() {
        let p = provider();
        let payload: Vec<u8> = (0..97).map(|i| (i * 7) as u8).collect();
        for (profile, key_len, salt_len) in [
            (SrtpProfile::AEAD_AES_128_GCM, 16, 12),
            (SrtpProfile::AEAD_AES_256_GCM, 32, 12),
            (SrtpProfile::AES128_CM_SHA1_80, 16, 14),
        ] {
            let keys = exported(profile, key_len, salt_len);
            let mut sender = SrtpSender::new(&p, &keys, 0x1234_5678, 0xfffe).unwrap();
            let mut out = [0u8; 1500];
            for (n, rtp_time) in [(0u64, 960u32), (1, 1920), (2, 9600)] {
                let len = sender
                    .write(111, rtp_time, 960, &payload, &mut out)
                    .unwrap();
                let index = 0xfffe + n;
                assert_eq!(&out[2..4], &(index as u16).to_be_bytes(), "{profile:?}");
                assert_eq!(&out[4..8], &rtp_time.to_be_bytes());
                assert_eq!(&out[8..12], &0x1234_5678u32.to_be_bytes());
                let marker = out[1] >> 7;
                assert_eq!(marker, u8::from(n != 1), "talkspurt starts are marked");
                assert_eq!(out[1] & 0x7f, 111);
                let plain = unprotect(&p, &keys, &out[..len], index);
                assert_eq!(plain, payload, "{profile:?} packet {n}");
            }
        }
    }

    /// A session key, salt and authentication key, derived again for the
    /// independent readings below.
    fn session_keys<const K: usize, const S: usize>(
        p: &CryptoProvider,
        keys: &ExportedKeys,
        side: Side,
        labels: Labels,
    ) -> ([u8; K], [u8; S], [u8; 20]) {
        let (master, master_salt) = master::<K, S>(keys, side).unwrap();
        let (mut key, mut salt, mut auth) = ([0; K], [0; S], [0; 20]);
        let srtp = p.srtp_provider;
        derive(srtp, &master, &master_salt, labels.encryption, &mut key);
        derive(srtp, &master, &master_salt, labels.salt, &mut salt);
        derive(srtp, &master, &master_salt, labels.auth, &mut auth);
        (key, salt, auth)
    }

    /// An independent reading of RFC 3711/7714's receive side, from the
    /// provider's primitives.
    fn unprotect(p: &CryptoProvider, keys: &ExportedKeys, packet: &[u8], index: u64) -> Vec<u8> {
        let srtp = p.srtp_provider;
        let (header, rest) = packet.split_at(RTP_HEADER_LEN);
        let ssrc = u32::from_be_bytes(header[8..12].try_into().unwrap());
        let (roc, seq) = ((index >> 16) as u32, index as u16);
        match keys.profile {
            SrtpProfile::AES128_CM_SHA1_80 => {
                let (key, salt, auth) = session_keys::<16, 14>(p, keys, Side::Ours, SRTP_LABELS);
                let (body, tag) = packet.split_at(packet.len() - 10);
                let sign = |k: &[u8], parts: &[&[u8]]| p.sha1_hmac_provider.sha1_hmac(k, parts);
                assert!(Aes128CmSha1_80::rtp_verify(sign, &auth, body, index, tag));
                let mut cipher = srtp.aes_128_cm_sha1_80().create_cipher(key, false);
                let iv = Aes128CmSha1_80::rtp_iv(salt, ssrc, index);
                let enc = &body[RTP_HEADER_LEN..];
                let mut plain = vec![0; enc.len() + CTR_SLACK];
                cipher.decrypt(&iv, enc, &mut plain).unwrap();
                plain.truncate(enc.len());
                plain
            }
            SrtpProfile::AEAD_AES_128_GCM => {
                let (key, salt, _) = session_keys::<16, 12>(p, keys, Side::Ours, SRTP_LABELS);
                let mut cipher = srtp.aead_aes_128_gcm().create_cipher(key, false);
                let iv = AeadAes128Gcm::rtp_iv(salt, ssrc, roc, seq);
                let mut plain = vec![0; rest.len()];
                let n = cipher.decrypt(&iv, &[header], rest, &mut plain).unwrap();
                plain.truncate(n);
                plain
            }
            SrtpProfile::AEAD_AES_256_GCM => {
                let (key, salt, _) = session_keys::<32, 12>(p, keys, Side::Ours, SRTP_LABELS);
                let mut cipher = srtp.aead_aes_256_gcm().create_cipher(key, false);
                let iv = AeadAes256Gcm::rtp_iv(salt, ssrc, roc, seq);
                let mut plain = vec![0; rest.len()];
                let n = cipher.decrypt(&iv, &[header], rest, &mut plain).unwrap();
                plain.truncate(n);
                plain
            }
            other => panic!("{other:?}"),
        }
    }

    /// What the peer sends: `plain` (a compound RTCP packet) protected
    /// with the peer's outgoing SRTCP keys, from the provider's primitives.
    fn protect_rtcp(
        p: &CryptoProvider,
        ours: &ExportedKeys,
        plain: &[u8],
        index: u32,
        encrypt: bool,
    ) -> Vec<u8> {
        let srtp = p.srtp_provider;
        let ssrc = u32::from_be_bytes(plain[4..8].try_into().unwrap());
        let e_and_index = (u32::from(encrypt) << 31 | index).to_be_bytes();
        let (header, body) = plain.split_at(SRTCP_HEADER_LEN);
        let mut out = header.to_vec();
        match ours.profile {
            SrtpProfile::AES128_CM_SHA1_80 => {
                let (key, salt, auth) = session_keys::<16, 14>(p, ours, Side::Peer, SRTCP_LABELS);
                if encrypt {
                    let mut cipher = srtp.aes_128_cm_sha1_80().create_cipher(key, true);
                    let iv = Aes128CmSha1_80::rtp_iv(salt, ssrc, u64::from(index));
                    let mut enc = vec![0; body.len() + CTR_SLACK];
                    cipher.encrypt(&iv, body, &mut enc).unwrap();
                    out.extend_from_slice(&enc[..body.len()]);
                } else {
                    out.extend_from_slice(body);
                }
                out.extend_from_slice(&e_and_index);
                let tag = p.sha1_hmac_provider.sha1_hmac(&auth, &[&out]);
                out.extend_from_slice(&tag[..10]);
            }
            SrtpProfile::AEAD_AES_128_GCM => {
                let (key, salt, _) = session_keys::<16, 12>(p, ours, Side::Peer, SRTCP_LABELS);
                let mut cipher = srtp.aead_aes_128_gcm().create_cipher(key, true);
                let iv = AeadAes128Gcm::rtcp_iv(salt, ssrc, index);
                if encrypt {
                    let aad = [header, &e_and_index[..]].concat();
                    let mut sealed = vec![0; body.len() + 16];
                    cipher.encrypt(&iv, &aad, body, &mut sealed).unwrap();
                    out.extend_from_slice(&sealed);
                } else {
                    let aad = [plain, &e_and_index[..]].concat();
                    let mut tag = vec![0; 16];
                    cipher.encrypt(&iv, &aad, &[], &mut tag).unwrap();
                    out.extend_from_slice(body);
                    out.extend_from_slice(&tag);
                }
                out.extend_from_slice(&e_and_index);
            }
            SrtpProfile::AEAD_AES_256_GCM => {
                let (key, salt, _) = session_keys::<32, 12>(p, ours, Side::Peer, SRTCP_LABELS);
                let mut cipher = srtp.aead_aes_256_gcm().create_cipher(key, true);
                let iv = AeadAes256Gcm::rtcp_iv(salt, ssrc, index);
                assert!(encrypt, "only the encrypted form is tested for GCM-256");
                let aad = [header, &e_and_index[..]].concat();
                let mut sealed = vec![0; body.len() + 16];
                cipher.encrypt(&iv, &aad, body, &mut sealed).unwrap();
                out.extend_from_slice(&sealed);
                out.extend_from_slice(&e_and_index);
            }
            other => panic!("{other:?}"),
        }
        out
    }

    const PROFILES: [(SrtpProfile, usize, usize); 3] = [
        (SrtpProfile::AEAD_AES_128_GCM, 16, 12),
        (SrtpProfile::AEAD_AES_256_GCM, 32, 12),
        (SrtpProfile::AES128_CM_SHA1_80, 16, 14),
    ];

    #[test]
    fn srtcp_from_the_peer_is_read_back_in_every_profile() {
        let p = provider();
        let plain = crate::rtcp::tests::receiver_report(0x0bad_cafe, 26);
        for (profile, key_len, salt_len) in PROFILES {
            for client in [false, true] {
                let mut keys = exported(profile, key_len, salt_len);
                keys.client = client;
                let mut rx = SrtcpReceiver::new(&p, &keys).unwrap();
                let mut out = [0u8; 200];
                for index in [1, 2, 7] {
                    let packet = protect_rtcp(&p, &keys, &plain, index, true);
                    assert_ne!(&packet[8..plain.len()], &plain[8..], "encrypted");
                    let got = rx.unprotect(&packet, &mut out).unwrap();
                    assert_eq!(got, plain, "{profile:?} client {client} index {index}");
                }
            }
        }
    }

    #[test]
    fn unencrypted_srtcp_is_authenticated_too() {
        let p = provider();
        let plain = crate::rtcp::tests::receiver_report(9, 3);
        for (profile, key_len, salt_len) in [PROFILES[0], PROFILES[2]] {
            let keys = exported(profile, key_len, salt_len);
            let mut rx = SrtcpReceiver::new(&p, &keys).unwrap();
            let mut out = [0u8; 200];
            let packet = protect_rtcp(&p, &keys, &plain, 4, false);
            assert_eq!(&packet[8..plain.len()], &plain[8..], "in the clear");
            assert_eq!(rx.unprotect(&packet, &mut out).unwrap(), plain);
            let forged = protect_rtcp(&p, &keys, &plain, 5, false);
            let mut tampered = forged.clone();
            tampered[12] ^= 1;
            assert_eq!(
                rx.unprotect(&tampered, &mut out),
                Err(SrtcpError::Unauthentic),
                "{profile:?}"
            );
            assert_eq!(rx.unprotect(&forged, &mut out).unwrap(), plain);
        }
    }

    #[test]
    fn tampered_replayed_short_and_misdirected_srtcp_is_refused() {
        let p = provider();
        let plain = crate::rtcp::tests::receiver_report(9, 3);
        for (profile, key_len, salt_len) in PROFILES {
            let keys = exported(profile, key_len, salt_len);
            let mut rx = SrtcpReceiver::new(&p, &keys).unwrap();
            let mut out = [0u8; 200];
            let packet = protect_rtcp(&p, &keys, &plain, 10, true);
            for at in [0, 9, packet.len() - 1] {
                let mut bad = packet.clone();
                bad[at] ^= 0x40;
                assert_eq!(
                    rx.unprotect(&bad, &mut out),
                    Err(SrtcpError::Unauthentic),
                    "{profile:?} byte {at}"
                );
            }
            assert!(rx.unprotect(&packet, &mut out).is_ok());
            assert_eq!(
                rx.unprotect(&packet, &mut out),
                Err(SrtcpError::Replayed(10))
            );
            // Another of the peer's SSRCs counts its own indices.
            let mut other = plain.clone();
            other[4..8].copy_from_slice(&0x5151_5151u32.to_be_bytes());
            let from_other = protect_rtcp(&p, &keys, &other, 10, true);
            assert_eq!(rx.unprotect(&from_other, &mut out).unwrap(), other);
            let older = protect_rtcp(&p, &keys, &plain, 9, true);
            assert_eq!(rx.unprotect(&older, &mut out), Err(SrtcpError::Replayed(9)));
            assert_eq!(
                rx.unprotect(&packet[..20], &mut out),
                Err(SrtcpError::TooShort)
            );
            let mut small = [0u8; 40];
            let newer = protect_rtcp(&p, &keys, &plain, 11, true);
            assert_eq!(
                rx.unprotect(&newer, &mut small),
                Err(SrtcpError::BufferTooSmall)
            );
            // Our own outgoing keys do not read what the peer sent.
            let mut flipped = keys.clone();
            flipped.client = !keys.client;
            let mut wrong = SrtcpReceiver::new(&p, &flipped).unwrap();
            assert_eq!(
                wrong.unprotect(&newer, &mut out),
                Err(SrtcpError::Unauthentic),
                "{profile:?}"
            );
        }
    }

    #[test]
    fn a_small_buffer_is_an_error_not_a_panic() {
        let p = provider();
        let keys = exported(SrtpProfile::AEAD_AES_128_GCM, 16, 12);
        let mut sender = SrtpSender::new(&p, &keys, 1, 0).unwrap();
        let mut out = [0u8; 40];
        assert_eq!(
            sender.write(111, 0, 960, &[0u8; 100], &mut out),
            Err(SrtpError::BufferTooSmall)
        );
    }
}
