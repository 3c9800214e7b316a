import { describe, expect, it } from "vitest";
import { DecryptionError, aesGcmDecrypt, aesGcmEncrypt, hkdfSha256, hmacSha256, randomKey, unwrapKey, wrapKey, zeroize } from "../../../daemon/keys/primitives.js";

const hex = (s: string) => Buffer.from(s, "hex");

/**
 * NIST CAVP gcmEncryptExtIV256.rsp (Keylen=256, IVlen=96, Taglen=128), as selected and transcribed
 * in Chromium's quiche `aes_256_gcm_encrypter_test.cc` (file downloaded from csrc.nist.gov
 * 2017-09-27). Two vectors from each [PTlen, AADlen] group listed.
 */
const CAVP_GCM_256: Array<{
  group: string;
  key: string;
  iv: string;
  pt: string;
  aad: string;
  ct: string;
  tag: string;
}> = [
  // [PTlen = 0] [AADlen = 0]
  {
    group: "PT 0, AAD 0",
    key: "b52c505a37d78eda5dd34f20c22540ea1b58963cf8e5bf8ffa85f9f2492505b4",
    iv: "516c33929df5a3284ff463d7",
    pt: "",
    aad: "",
    ct: "",
    tag: "bdc1ac884d332457a1d2664f168c76f0",
  },
  {
    group: "PT 0, AAD 0",
    key: "5fe0861cdc2690ce69b3658c7f26f8458eec1c9243c5ba0845305d897e96ca0f",
    iv: "770ac1a5a3d476d5d96944a1",
    pt: "",
    aad: "",
    ct: "",
    tag: "196d691e1047093ca4b3d2ef4baba216",
  },
  // [PTlen = 0] [AADlen = 128]: empty plaintext with AAD
  {
    group: "PT 0, AAD 128",
    key: "78dc4e0aaf52d935c3c01eea57428f00ca1fd475f5da86a49c8dd73d68c8e223",
    iv: "d79cf22d504cc793c3fb6c8a",
    pt: "",
    aad: "b96baa8c1c75a671bfb2d08d06be5f36",
    ct: "",
    tag: "3e5d486aa2e30b22e040b85723a06e76",
  },
  {
    group: "PT 0, AAD 128",
    key: "4457ff33683cca6ca493878bdc00373893a9763412eef8cddb54f91318e0da88",
    iv: "699d1f29d7b8c55300bb1fd2",
    pt: "",
    aad: "6749daeea367d0e9809e2dc2f309e6e3",
    ct: "",
    tag: "d60c74d2517fde4a74e0cd4709ed43a9",
  },
  // [PTlen = 128] [AADlen = 0]: plaintext without AAD
  {
    group: "PT 128, AAD 0",
    key: "31bdadd96698c204aa9ce1448ea94ae1fb4a9a0b3c9d773b51bb1822666b8f22",
    iv: "0d18e06c7c725ac9e362e1ce",
    pt: "2db5168e932556f8089a0622981d017d",
    aad: "",
    ct: "fa4362189661d163fcd6a56d8bf0405a",
    tag: "d636ac1bbedd5cc3ee727dc2ab4a9489",
  },
  {
    group: "PT 128, AAD 0",
    key: "460fc864972261c2560e1eb88761ff1c992b982497bd2ac36c04071cbb8e5d99",
    iv: "8a4a16b9e210eb68bcb6f58d",
    pt: "99e4e926ffe927f691893fb79a96b067",
    aad: "",
    ct: "133fc15751621b5f325c7ff71ce08324",
    tag: "ec4e87e0cf74a13618d0b68636ba9fa7",
  },
  // [PTlen = 408] [AADlen = 160]: both
  {
    group: "PT 408, AAD 160",
    key: "24501ad384e473963d476edcfe08205237acfd49b5b8f33857f8114e863fec7f",
    iv: "9ff18563b978ec281b3f2794",
    pt: "27f348f9cdc0c5bd5e66b1ccb63ad920ff2219d14e8d631b3872265cf117ee86757accb158bd9abb3868fdc0d0b074b5f01b2c",
    aad: "adb5ec720ccf9898500028bf34afccbcaca126ef",
    ct: "eb7cb754c824e8d96f7c6d9b76c7d26fb874ffbf1d65c6f64a698d839b0b06145dae82057ad55994cf59ad7f67c0fa5e85fab8",
    tag: "bc95c532fecc594c36d1550286a7a3f0",
  },
  {
    group: "PT 408, AAD 160",
    key: "fb43f5ab4a1738a30c1e053d484a94254125d55dccee1ad67c368bc1a985d235",
    iv: "9fbb5f8252db0bca21f1c230",
    pt: "34b797bb82250e23c5e796db2c37e488b3b99d1b981cea5e5b0c61a0b39adb6bd6ef1f50722e2e4f81115cfcf53f842e2a6c08",
    aad: "98f8ae1735c39f732e2cbee1156dabeb854ec7a2",
    ct: "871cd53d95a8b806bd4821e6c4456204d27fd704ba3d07ce25872dc604ea5c5ea13322186b7489db4fa060c1fd4159692612c8",
    tag: "07b48e4a32fac47e115d7ac7445d8330",
  },
  // [PTlen = 408] [AADlen = 720]
  {
    group: "PT 408, AAD 720",
    key: "148579a3cbca86d5520d66c0ec71ca5f7e41ba78e56dc6eebd566fed547fe691",
    iv: "b08a5ea1927499c6ecbfd4e0",
    pt: "9d0b15fdf1bd595f91f8b3abc0f7dec927dfd4799935a1795d9ce00c9b879434420fe42c275a7cd7b39d638fb81ca52b49dc41",
    aad: "e4f963f015ffbb99ee3349bbaf7e8e8e6c2a71c230a48f9d59860a29091d2747e01a5ca572347e247d25f56ba7ae8e05cde2be3c97931292c02370208ecd097ef692687fecf2f419d3200162a6480a57dad408a0dfeb492e2c5d",
    ct: "2097e372950a5e9383c675e89eea1c314f999159f5611344b298cda45e62843716f215f82ee663919c64002a5c198d7878fd3f",
    tag: "adbecdb0d5c2224d804d2886ff9a5760",
  },
  {
    group: "PT 408, AAD 720",
    key: "e49af19182faef0ebeeba9f2d3be044e77b1212358366e4ef59e008aebcd9788",
    iv: "e7f37d79a6a487a5a703edbb",
    pt: "461cd0caf7427a3d44408d825ed719237272ecd503b9094d1f62c97d63ed83a0b50bdc804ffdd7991da7a5b6dcf48d4bcd2cbc",
    aad: "19a9a1cfc647346781bef51ed9070d05f99a0e0192a223c5cd2522dbdf97d9739dd39fb178ade3339e68774b058aa03e9a20a9a205bc05f32381df4d63396ef691fefd5a71b49a2ad82d5ea428778ca47ee1398792762413cff4",
    ct: "32ca3588e3e56eb4c8301b009d8b84b8a900b2b88ca3c21944205e9dd7311757b51394ae90d8bb3807b471677614f4198af909",
    tag: "3e403d035c71d88f1be1a256c89ba6ad",
  },
  // [PTlen = 104] [AADlen = 0]: a partial final block
  {
    group: "PT 104, AAD 0",
    key: "82c4f12eeec3b2d3d157b0f992d292b237478d2cecc1d5f161389b97f999057a",
    iv: "7b40b20f5f397177990ef2d1",
    pt: "982a296ee1cd7086afad976945",
    aad: "",
    ct: "ec8e05a0471d6b43a59ca5335f",
    tag: "113ddeafc62373cac2f5951bb9165249",
  },
  {
    group: "PT 104, AAD 0",
    key: "db4340af2f835a6c6d7ea0ca9d83ca81ba02c29b7410f221cb6071114e393240",
    iv: "40e438357dd80a85cac3349e",
    pt: "8ddb3397bd42853193cb0f80c9",
    aad: "",
    ct: "b694118c85c41abf69e229cb0f",
    tag: "c07f1b8aafbd152f697eb67f2a85fe45",
  },
];

describe("AES-256-GCM", () => {
  it.each(CAVP_GCM_256.map((v, i) => ({ ...v, n: i })))("matches NIST CAVP gcmEncryptExtIV256 vector $n ($group)", (v) => {
    const { ciphertext, tag } = aesGcmEncrypt(hex(v.key), hex(v.iv), hex(v.pt), hex(v.aad));
    expect(ciphertext.toString("hex")).toBe(v.ct);
    expect(tag.toString("hex")).toBe(v.tag);
    expect(aesGcmDecrypt(hex(v.key), hex(v.iv), hex(v.ct), hex(v.tag), hex(v.aad)).toString("hex")).toBe(v.pt);
  });

  describe("rejects a single flipped bit", () => {
    const v = CAVP_GCM_256[6]!; // has plaintext and AAD
    const flip = (s: string, byte = 0) => {
      const b = hex(s);
      b[byte]! ^= 0x01;
      return b;
    };
    const cases: Array<[string, () => Buffer]> = [
      ["nonce", () => aesGcmDecrypt(hex(v.key), flip(v.iv, 11), hex(v.ct), hex(v.tag), hex(v.aad))],
      ["tag", () => aesGcmDecrypt(hex(v.key), hex(v.iv), hex(v.ct), flip(v.tag, 15), hex(v.aad))],
      ["ciphertext", () => aesGcmDecrypt(hex(v.key), hex(v.iv), flip(v.ct, 20), hex(v.tag), hex(v.aad))],
      ["AAD", () => aesGcmDecrypt(hex(v.key), hex(v.iv), hex(v.ct), hex(v.tag), flip(v.aad, 3))],
      ["key", () => aesGcmDecrypt(flip(v.key, 31), hex(v.iv), hex(v.ct), hex(v.tag), hex(v.aad))],
    ];
    it.each(cases)("in the %s", (_name, attempt) => {
      expect(attempt).toThrow(DecryptionError);
    });
  });

  it("rejects a truncated tag instead of checking fewer bits", () => {
    const v = CAVP_GCM_256[6]!;
    expect(() => aesGcmDecrypt(hex(v.key), hex(v.iv), hex(v.ct), hex(v.tag).subarray(0, 12), hex(v.aad))).toThrow(DecryptionError);
  });

  it("never puts key or plaintext bytes in the error message", () => {
    const key = randomKey();
    const nonce = Buffer.alloc(12, 7);
    const plaintext = Buffer.from("MRN 0012345 Jane Doe");
    const { ciphertext, tag } = aesGcmEncrypt(key, nonce, plaintext, Buffer.alloc(0));
    tag[0]! ^= 1;
    let message = "";
    try {
      aesGcmDecrypt(key, nonce, ciphertext, tag, Buffer.alloc(0));
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).not.toBe("");
    for (const secret of [key, plaintext, ciphertext]) {
      expect(message).not.toContain(secret.toString("hex"));
      expect(message).not.toContain(secret.toString("base64"));
    }
    expect(message).not.toContain("Jane");
  });

  it("validates key and nonce lengths", () => {
    expect(() => aesGcmEncrypt(Buffer.alloc(16), Buffer.alloc(12), Buffer.alloc(1), Buffer.alloc(0))).toThrow(/key must be 32 bytes/);
    expect(() => aesGcmEncrypt(Buffer.alloc(32), Buffer.alloc(16), Buffer.alloc(1), Buffer.alloc(0))).toThrow(/nonce must be 12 bytes/);
    expect(() => aesGcmDecrypt(Buffer.alloc(32), Buffer.alloc(8), Buffer.alloc(1), Buffer.alloc(16), Buffer.alloc(0))).toThrow(/nonce must be 12 bytes/);
  });
});

describe("HKDF-SHA256 (RFC 5869 Appendix A)", () => {
  const range = (from: number, to: number) => Buffer.from(Array.from({ length: to - from + 1 }, (_, i) => from + i));

  it("test case 1: basic", () => {
    const okm = hkdfSha256(Buffer.alloc(22, 0x0b), hex("000102030405060708090a0b0c"), hex("f0f1f2f3f4f5f6f7f8f9"), 42);
    expect(okm.toString("hex")).toBe("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
  });

  it("test case 2: longer inputs and outputs", () => {
    const okm = hkdfSha256(range(0x00, 0x4f), range(0x60, 0xaf), range(0xb0, 0xff), 82);
    expect(okm.toString("hex")).toBe(
      "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c" +
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71" +
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    );
  });

  it("test case 3: zero-length salt and info", () => {
    const okm = hkdfSha256(Buffer.alloc(22, 0x0b), Buffer.alloc(0), Buffer.alloc(0), 42);
    expect(okm.toString("hex")).toBe("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
  });

  it("rejects output lengths RFC 5869 §2.3 forbids", () => {
    expect(() => hkdfSha256(Buffer.alloc(32), Buffer.alloc(0), Buffer.alloc(0), 0)).toThrow(RangeError);
    expect(() => hkdfSha256(Buffer.alloc(32), Buffer.alloc(0), Buffer.alloc(0), 255 * 32 + 1)).toThrow(RangeError);
  });
});

describe("AES-256 key wrap (RFC 3394)", () => {
  // RFC 3394 §4.6: wrap 256 bits of key data with a 256-bit KEK.
  const kek = hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
  const keyData = hex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
  const wrapped = hex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21");

  it("matches the §4.6 vector", () => {
    expect(wrapKey(kek, keyData).equals(wrapped)).toBe(true);
    expect(unwrapKey(kek, wrapped).equals(keyData)).toBe(true);
  });

  it("fails to unwrap with the wrong KEK", () => {
    const other = Buffer.from(kek);
    other[0]! ^= 1;
    expect(() => unwrapKey(other, wrapped)).toThrow(DecryptionError);
  });

  it("fails to unwrap a tampered or truncated wrapped key", () => {
    for (const byte of [0, 8, 39]) {
      const bad = Buffer.from(wrapped);
      bad[byte]! ^= 0x80;
      expect(() => unwrapKey(kek, bad)).toThrow(DecryptionError);
    }
    expect(() => unwrapKey(kek, wrapped.subarray(0, 32))).toThrow(DecryptionError);
    expect(() => unwrapKey(kek, wrapped.subarray(0, 37))).toThrow(DecryptionError);
  });
});

describe("HMAC, random keys, zeroize", () => {
  it("HMAC-SHA-256 matches RFC 4231 test case 2", () => {
    expect(hmacSha256(Buffer.from("Jefe"), Buffer.from("what do ya want for nothing?")).toString("hex")).toBe("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  });

  it("randomKey gives distinct 32-byte keys", () => {
    const a = randomKey();
    const b = randomKey();
    expect(a).toHaveLength(32);
    expect(a.equals(b)).toBe(false);
  });

  it("zeroize overwrites the buffer in place", () => {
    const key = randomKey();
    const view = key.subarray(4, 8);
    zeroize(key);
    expect(key.every((b) => b === 0)).toBe(true);
    expect(view.every((b) => b === 0)).toBe(true);
  });
});
