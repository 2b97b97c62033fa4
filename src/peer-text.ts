/**
 * Text from another process — a message's type, a collective's name, a tensor name, the message an
 * abort carried, a store key, a channel — made fit for a log line or an error message. Every
 * string a peer supplied goes through here before it enters one: a peer (a token holder, or a
 * stranger before the handshake) must not be able to write newlines, carriage returns or terminal
 * escape sequences into this rank's stderr (and so into ringrun's, where a forged
 * `[1,0]<stderr>:` line would pass for another rank's output), nor megabytes of text.
 *
 *   - control characters (C0, DEL, C1), line and paragraph separators, and the invisible
 *     formatting characters (bidirectional overrides, zero-width ones) are written as escapes:
 *     \n, \r, \t, \xNN, \u{NNNN}; so are lone UTF-16 surrogates;
 *   - the result is at most `max` characters of text (PEER_TEXT_MAX by default), followed by
 *     "…(N more)" when N characters of the input were left out.
 *
 * The helper escapes for display only: what is compared or stored (a collective's name, which
 * ranks must agree on) is the peer's own string, unchanged.
 */
export const PEER_TEXT_MAX = 200;

// Control and formatting characters, and lone surrogates (a pair is one visible character).
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const NAMED: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeChar(c: string): string {
  const code = c.charCodeAt(0);
  return NAMED[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u{${code.toString(16).padStart(4, '0')}}`);
}

/** `s` with its unsafe characters escaped, cut to at most `max` characters (see above). */
export function peerText(s: string, max = PEER_TEXT_MAX): string {
  if (s.length <= max && !UNSAFE.test(s)) return s;
  let out = '';
  let i = 0;
  while (i < s.length) {
    // One character at a time: a surrogate pair stays whole, an unsafe character becomes its escape.
    const pair = s.charCodeAt(i) >= 0xd800 && s.charCodeAt(i) <= 0xdbff && i + 1 < s.length && /[\udc00-\udfff]/.test(s[i + 1]);
    const c = pair ? s.slice(i, i + 2) : s[i];
    const shown = pair || !UNSAFE.test(c) ? c : escapeChar(c);
    if (out.length + shown.length > max) break;
    out += shown;
    i += c.length;
  }
  return i < s.length ? `${out}…(${s.length - i} more)` : out;
}

/**
 * Any decoded value a peer sent, as an error message shows it: a string quoted (and made safe by
 * peerText), a number or boolean as itself, anything larger by its kind and size only.
 */
export function peerValue(v: unknown, max = PEER_TEXT_MAX): string {
  if (typeof v === 'string') return `'${peerText(v, max)}'`;
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (v === null || v === undefined || typeof v === 'boolean') return String(v);
  if (v instanceof Uint8Array) return `<${v.byteLength} bytes>`;
  if (Array.isArray(v)) return `[an array of ${v.length}]`;
  if (typeof v === 'object') return `{an object of ${Object.keys(v).length} keys}`;
  return typeof v;
}
