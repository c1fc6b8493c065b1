/**
 * Deterministic generator of a realistic chat data set (a messenger's SQLite database plus a
 * media folder), used by `locket demo-data DIR`, the demo and the benchmarks.
 *
 * Everything is derived from a seed through a small PRNG, so a given seed always produces the
 * same rows and byte-identical media files; benchmarks can then be compared across machines.
 */
import { createCipheriv, createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  statSync,
  utimesSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { DatabaseSync, type StatementSync } from "node:sqlite";

/** Options for {@link writeDemoData}. */
export interface DemoDataOptions {
  /** Number of messages to generate (default 20000). */
  messages?: number;
  /** Media budget in MiB (default 20); media stops being attached once it is used up. */
  mediaMb?: number;
  /** PRNG seed (default 1); the same seed always gives the same data set. */
  seed?: number;
  /** Called after each committed batch of messages. */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link writeDemoData} wrote. */
export interface DemoDataResult {
  /** Path of the SQLite database (`DIR/chat.db`). */
  dbPath: string;
  /** Path of the media folder (`DIR/Media`). */
  mediaDir: string;
  /** Number of message rows written. */
  messages: number;
  /** Number of media files written. */
  mediaFiles: number;
  /** Database file size plus the total size of the media files, in bytes. */
  bytes: number;
}

/** Options for {@link simulateDay}. */
export interface DayOptions {
  /** Messages to append (default 500). */
  newMessages?: number;
  /** Fraction of the existing message rows whose status/receipts change (default 0.01). */
  statusUpdates?: number;
  /** When true, the status updates hit the newest rows instead of random ones (default false). */
  recent?: boolean;
  /** Media files to attach to the new messages (default newMessages / 15, at most newMessages). */
  newMedia?: number;
  /** PRNG seed (default 2); pass a different seed for each simulated day. */
  seed?: number;
}

/** What {@link simulateDay} changed. */
export interface DayResult {
  /** Message rows inserted. */
  newMessages: number;
  /** Existing message rows updated. */
  updatedRows: number;
  /** Media files written. */
  newMediaFiles: number;
  /** Total size of the media files written, in bytes. */
  newMediaBytes: number;
}

const DB_NAME = "chat.db";
const MEDIA_NAME = "Media";
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const EPOCH_MS = Date.UTC(2024, 0, 1);
const MIB = 1024 * 1024;
const BATCH = 10_000;
const MEDIA_RATE = 1 / 15;

const STATUS_PENDING = 0;
const STATUS_SENT = 4;
const STATUS_DELIVERED = 5;
const STATUS_READ = 13;

// ---------------------------------------------------------------------------------------------
// PRNG

/**
 * xoshiro128**: tiny, fast and good enough for synthetic data. The state comes from SHA-256 of a
 * label so that different purposes (base data set, a simulated day) never share a stream even
 * when the numeric seeds coincide.
 */
class Rng {
  a: number;
  b: number;
  c: number;
  d: number;

  constructor(seed: number, stream: string) {
    const h = createHash("sha256").update(`locket-demo-data/${stream}/${seed}`).digest();
    this.a = h.readInt32LE(0);
    this.b = h.readInt32LE(4);
    this.c = h.readInt32LE(8);
    this.d = h.readInt32LE(12);
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  next(): number {
    const b = this.b;
    const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    this.c ^= this.a;
    this.d ^= b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.next() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** Uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  /** Exponentially distributed with the given mean. */
  exp(mean: number): number {
    return -Math.log(1 - this.float()) * mean;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  hex(bytes: number): string {
    let s = "";
    for (let i = 0; i < bytes; i += 4) s += this.next().toString(16).padStart(8, "0");
    return s.slice(0, bytes * 2).toUpperCase();
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Picks indices with given relative weights (binary search over the cumulative sums). */
class Sampler {
  cumulative: Float64Array;

  constructor(weights: readonly number[]) {
    this.cumulative = new Float64Array(weights.length);
    let sum = 0;
    for (let i = 0; i < weights.length; i++) {
      sum += weights[i];
      this.cumulative[i] = sum;
    }
  }

  pick(rng: Rng): number {
    const c = this.cumulative;
    const x = rng.float() * c[c.length - 1];
    let lo = 0;
    let hi = c.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (c[mid] > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/** Zipf-like weights: real word and chat activity frequencies are heavily skewed. */
function zipfWeights(n: number, exponent: number): number[] {
  const w: number[] = [];
  for (let i = 0; i < n; i++) w.push(1 / (i + 2) ** exponent);
  return w;
}

function shuffle<T>(rng: Rng, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const tmp = items[i];
    items[i] = items[j];
    items[j] = tmp;
  }
  return items;
}

/** FNV-1a; lets a day simulation re-derive per-chat traits (language) from the stored jid. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Text

interface Lang {
  /** Single words, most frequent first. */
  words: readonly string[];
  /** Common multi-word chunks: real chat reuses collocations, not just single words. */
  chunks: readonly string[];
  starters: readonly string[];
  /** Whole canned sentences. */
  phrases: readonly string[];
  /** One-word-ish replies. */
  short: readonly string[];
  sampler: Sampler;
  chunkSampler: Sampler;
}

function lang(
  words: readonly string[],
  chunks: readonly string[],
  starters: readonly string[],
  phrases: readonly string[],
  short: readonly string[],
): Lang {
  return {
    words,
    chunks,
    starters,
    phrases,
    short,
    sampler: new Sampler(zipfWeights(words.length, 1)),
    chunkSampler: new Sampler(zipfWeights(chunks.length, 0.8)),
  };
}

// biome-ignore format: compact word lists
const EN = lang(
  [
    "the", "i", "you", "to", "it", "a", "and", "is", "that", "we", "in", "me", "for", "so", "on",
    "just", "be", "my", "have", "but", "not", "this", "do", "what", "are", "at", "can", "was",
    "get", "if", "no", "will", "like", "know", "think", "all", "go", "now", "up", "out", "about",
    "too", "your", "how", "there", "good", "time", "they", "see", "tomorrow", "today", "going",
    "want", "got", "when", "really", "back", "need", "well", "then", "would", "come", "here",
    "maybe", "still", "did", "home", "or", "them", "work", "right", "sure", "night", "tonight",
    "love", "from", "let", "more", "some", "make", "because", "later", "been", "much", "take",
    "could", "day", "one", "should", "with", "people", "again", "week", "weekend", "said",
    "something", "why", "already", "yet", "probably", "actually", "pretty", "tired", "dinner",
    "lunch", "coffee", "beer", "train", "car", "bus", "late", "early", "soon", "office", "meeting",
    "call", "phone", "message", "pic", "photo", "video", "party", "birthday", "present", "mum",
    "dad", "kids", "dog", "cat", "school", "gym", "run", "match", "game", "movie", "show",
    "episode", "book", "trip", "flight", "hotel", "beach", "rain", "sun", "cold", "hot", "weather",
    "money", "shop", "groceries", "milk", "bread", "pizza", "cake", "wine", "friends", "house",
    "flat", "keys", "door", "station", "parking", "traffic", "minutes", "hour", "hours", "morning",
    "afternoon", "evening", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
    "sunday", "next", "last", "first", "new", "old", "great", "nice", "fun", "cool", "funny",
    "crazy", "amazing", "awful", "bad", "better", "best", "big", "little", "long", "quick", "free",
    "busy", "ready", "done", "sorry", "thanks", "please", "ok", "yeah", "yes", "nope", "lol",
    "haha", "omg", "btw", "tbh", "idk", "anyway", "though", "also", "even", "never", "always",
    "every", "everyone", "nobody", "somewhere", "everything", "nothing", "bring", "pick", "send",
    "told", "asked", "heard", "saw", "said", "left", "forgot", "remember", "check", "try", "wait",
    "leave", "stay", "meet", "eat", "drink", "sleep", "watch", "play", "buy", "pay", "book",
    "cancel", "fix", "plan", "idea", "problem", "question", "answer", "news", "thing", "stuff",
    "place",
  ],
  [
    "at the station", "in a bit", "this weekend", "after work", "the new place", "for dinner",
    "with the kids", "on the way", "at home", "right now", "next week", "last night",
    "this morning", "tomorrow evening", "in the city", "at the office", "for a while", "a bit late",
    "the whole day", "so much fun", "no idea", "all good", "not sure", "if you want",
    "when you can", "as soon as", "by the way", "at some point", "the other day", "on friday",
    "on saturday", "before lunch", "after the game", "at the gym", "in the car", "on the train",
    "at the bar", "the birthday party", "the big match", "your mum", "my sister", "my brother",
    "the landlord", "the doctor", "the dentist", "the kids' school", "the boss", "the neighbours",
    "a quick call", "a few minutes", "a couple of days", "the last episode", "that new series",
    "the concert", "the tickets", "the pictures", "the address", "the keys", "the car park",
    "the supermarket", "some bread", "a bottle of wine", "the pizza place", "the beach",
    "the holiday", "the flight", "the hotel", "the weather", "so tired", "really good",
    "pretty bad", "super busy", "a lot", "too much", "kind of", "I guess", "to be honest",
    "for sure", "let's go", "come over", "pick you up", "drop you off", "catch up", "hang out",
    "figure it out", "sort it out", "check it out", "looking forward to it", "can't wait",
    "I don't know", "I have no idea", "we'll see", "it's fine", "that's it", "it was great",
    "it's raining", "it's so hot", "I'm starving", "I'm on my way", "I'll call you", "call me",
    "text me", "let me check", "I'll ask", "did you see", "you know", "sounds like a plan",
    "good idea", "works for me",
  ],
  [
    "did you", "can you", "I think", "we should", "just saw", "don't forget", "are we still",
    "let me know if", "what about", "omg", "honestly", "do you want to", "I'll", "I can't",
    "have you", "guess what", "so", "btw", "wait", "remember", "I just", "is it ok if", "what time",
    "who is", "how was", "any chance", "I'm",
  ],
  [
    "running 10 min late sorry", "can you pick up milk on the way home?", "happy birthday!! 🎉",
    "on the train now", "just landed", "call me when you're free", "what time are we meeting?",
    "I'm outside", "sounds good to me", "see you there", "did you get my email?",
    "no worries at all", "that's hilarious", "send me the pics!",
    "is anyone coming to the match on saturday?", "dinner at ours on friday?",
    "the kids are finally asleep", "traffic is terrible today", "I'll be home around 7",
    "can't make it tonight, sorry", "let's do next week instead", "where are you?",
    "the wifi at the flat is down again", "who's bringing drinks?", "good luck today!",
    "congrats!!", "how's the new job going?", "miss you guys", "that was so much fun",
    "I owe you one", "take care", "get well soon", "safe travels",
  ],
  [
    "ok", "ok!", "okay", "k", "yes", "yeah", "yep", "no", "nope", "sure", "thanks!", "thank you 🙏",
    "ty", "lol", "haha", "hahaha", "😂", "😂😂😂", "👍", "❤️", "omw", "on my way", "np", "cool", "nice",
    "great!", "perfect", "sounds good", "see you", "good night", "morning!", "same", "true",
    "exactly", "wow", "oh no", "ugh", "yay", "👀", "🙈", "done", "sure thing", "will do", "maybe",
    "brb", "love you", "xx",
  ],
);

// biome-ignore format: compact word lists
const DE = lang(
  [
    "ich", "du", "und", "das", "ist", "nicht", "ja", "wir", "es", "die", "der", "mal", "noch",
    "schon", "auf", "heute", "morgen", "gut", "auch", "was", "wie", "aber", "dann", "mit", "zu",
    "bin", "hast", "haben", "kann", "machen", "kommen", "gleich", "später", "wo", "jetzt", "bitte",
    "danke", "genau", "vielleicht", "Abend", "Essen", "Zeit", "Uhr", "Hause", "Arbeit", "schön",
    "super", "geht", "los", "sehen", "Wochenende", "einkaufen", "Bahn", "Verspätung", "kurz",
    "lange", "alle", "sind", "wann", "warum", "doch", "nur", "sehr", "mehr", "war", "hab", "gerne",
    "fertig", "Kinder", "Oma", "Geburtstag", "Kuchen", "Wetter", "Regen", "Bier", "Fahrrad",
    "Termin", "Brötchen", "Hund", "Urlaub",
  ],
  [
    "am Wochenende", "nach der Arbeit", "heute Abend", "zu Hause", "in der Stadt",
    "mit den Kindern", "bis später", "keine Ahnung", "auf dem Weg", "ein bisschen", "nächste Woche",
    "gestern Abend", "beim Bäcker", "im Büro", "das ist gut", "ich weiß nicht", "kein Problem",
    "mal schauen", "um acht", "für morgen",
  ],
  [
    "hast du", "kannst du", "ich glaube", "wir sollten", "weißt du", "wann", "sag mal", "übrigens",
  ],
  [
    "bin in 10 Minuten da", "alles Gute zum Geburtstag! 🎂", "kannst du Brot mitbringen?",
    "die Bahn hat mal wieder Verspätung", "wollen wir am Wochenende grillen?", "sitze noch im Büro",
    "schlaf gut", "bis später!",
  ],
  [
    "ok", "ja", "nein", "danke!", "alles klar", "passt", "gute Nacht", "bis gleich", "super", "jo",
  ],
);

// biome-ignore format: compact word lists
const ES = lang(
  [
    "que", "de", "no", "la", "el", "y", "en", "a", "es", "lo", "me", "se", "los", "por", "un",
    "para", "con", "una", "mi", "pero", "ya", "si", "bien", "muy", "hoy", "mañana", "vale", "vamos",
    "tengo", "casa", "ahora", "luego", "cuando", "donde", "todo", "nos", "está", "hay", "tal",
    "gracias", "porfa", "comer", "cena", "trabajo", "hora", "quedamos", "genial", "fiesta", "playa",
    "fin", "semana", "mamá", "papá", "oye", "nada", "claro", "también", "dime", "tarde", "noche",
    "café", "cerveza", "tren", "perro",
  ],
  [
    "este fin de semana", "después del trabajo", "esta noche", "en casa", "ni idea", "ahora mismo",
    "la semana que viene", "con los niños", "de camino", "un poco", "no pasa nada", "qué tal",
    "nos vemos", "a las ocho", "en el centro",
  ],
  [
    "oye", "¿has visto", "¿puedes", "creo que", "¿quedamos", "por cierto", "mira",
  ],
  [
    "llego en 10 minutos", "¡feliz cumpleaños! 🎉", "¿a qué hora quedamos?",
    "estoy saliendo del trabajo", "¿cenamos el viernes?", "buenas noches",
  ],
  [
    "vale", "sí", "no", "gracias!", "jajaja", "claro", "genial", "de nada", "venga", "ok",
  ],
);

// biome-ignore format: compact word lists
const PT = lang(
  [
    "que", "não", "de", "eu", "você", "é", "o", "a", "e", "tá", "pra", "com", "um", "uma", "mas",
    "já", "hoje", "amanhã", "aqui", "tudo", "bem", "beleza", "vamos", "casa", "agora", "depois",
    "obrigado", "gente", "sim", "quando", "onde", "trabalho", "jantar", "almoço", "saudade",
    "legal", "muito", "bom", "dia", "noite", "fim", "semana", "praia", "festa", "mãe", "pai",
    "cerveja", "chuva", "ônibus",
  ],
  [
    "esse fim de semana", "depois do trabalho", "hoje à noite", "em casa", "não sei", "agora mesmo",
    "semana que vem", "com as crianças", "a caminho", "um pouco", "tudo bem", "a gente se vê",
    "lá em casa",
  ],
  [
    "você viu", "será que", "acho que", "bora", "então", "olha",
  ],
  [
    "chego em 10 minutos", "feliz aniversário! 🎂", "bom dia, gente!", "tô saindo agora",
    "vamos almoçar amanhã?", "saudades de vocês",
  ],
  [
    "kkkk", "sim", "não", "obrigado!", "beleza", "tá bom", "show", "valeu", "boa noite", "ok",
  ],
);

// biome-ignore format: compact word lists
const FR = lang(
  [
    "je", "tu", "le", "la", "de", "et", "pas", "on", "est", "que", "c'est", "ça", "ce", "soir",
    "demain", "aujourd'hui", "oui", "non", "merci", "bien", "super", "avec", "pour", "chez", "moi",
    "toi", "vous", "nous", "quand", "où", "maintenant", "après", "manger", "travail", "week-end",
    "bisous", "trop", "vraiment", "déjà", "encore", "beaucoup", "heure", "train", "retard",
    "maison", "apéro", "pluie",
  ],
  [
    "ce week-end", "après le boulot", "ce soir", "à la maison", "aucune idée", "tout de suite",
    "la semaine prochaine", "avec les enfants", "en route", "un peu", "pas de souci",
    "à tout à l'heure", "en ville",
  ],
  [
    "tu as vu", "tu peux", "je pense que", "on se voit", "au fait", "dis",
  ],
  [
    "j'arrive dans 10 minutes", "joyeux anniversaire ! 🎉", "on fait un apéro ce soir ?",
    "le train a du retard", "bonne nuit",
  ],
  [
    "ok", "oui", "non", "merci !", "mdr", "d'accord", "top", "bisous", "à plus", "grave",
  ],
);

// biome-ignore format: compact word lists
const NL = lang(
  [
    "ik", "je", "de", "het", "een", "en", "is", "niet", "wat", "dat", "we", "op", "ook", "nog",
    "wel", "maar", "morgen", "vandaag", "straks", "goed", "leuk", "thuis", "werk", "eten", "fiets",
    "trein", "gezellig", "even", "zo", "dan", "kom", "kan", "heb", "ga", "hoe", "waar", "wanneer",
    "lekker", "weekend", "jij", "mama", "papa", "borrel", "regen",
  ],
  [
    "dit weekend", "na het werk", "vanavond", "thuis", "geen idee", "nu meteen", "volgende week",
    "met de kinderen", "onderweg", "een beetje", "geen probleem", "tot straks", "in de stad",
  ],
  [
    "heb je", "kun je", "ik denk", "zullen we", "trouwens", "weet je",
  ],
  [
    "ben er over 10 minuten", "gefeliciteerd! 🎉", "zullen we vrijdag eten?", "slaap lekker",
  ],
  [
    "ok", "ja", "nee", "dank je!", "haha", "prima", "top", "doei", "oke", "leuk",
  ],
);

const LANGS: readonly Lang[] = [EN, DE, ES, PT, FR, NL];
const LANG_SAMPLER = new Sampler([0.6, 0.12, 0.1, 0.08, 0.06, 0.04]);

/** Derived from the jid so that a later simulated day writes in the chat's language again. */
function chatLang(jid: string): Lang {
  const u = fnv1a(jid) / 4294967296;
  const c = LANG_SAMPLER.cumulative;
  for (let i = 0; i < c.length; i++) if (u * c[c.length - 1] < c[i]) return LANGS[i];
  return EN;
}

// biome-ignore format: compact data table
const EMOJI: readonly string[] = [
  "😂", "👍", "❤️", "😊", "🙏", "😅", "🎉", "😍", "🤣", "😭", "🔥", "👀", "🙈", "😘", "💪", "🤔", "😎", "🥳", "😴",
  "🍕", "☕", "🍻", "🏃", "🚆", "☀️", "🌧️", "🎂", "👌", "🙌", "💯", "😬", "🤷", "✨", "🐶", "📸", "⚽", "🎶", "😉",
  "🤗", "😢",
];
const EMOJI_SAMPLER = new Sampler(zipfWeights(EMOJI.length, 1.2));

// biome-ignore format: compact data table
const URL_SITES: readonly string[] = [
  "youtu.be", "www.instagram.com/p", "maps.app.goo.gl", "open.spotify.com/track",
  "www.nytimes.com/2024", "www.bbc.co.uk/news", "www.airbnb.com/rooms", "vm.tiktok.com",
  "github.com", "docs.google.com/document/d", "www.amazon.de/dp", "x.com/status",
];
const URL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

function url(rng: Rng): string {
  const site = rng.pick(URL_SITES);
  if (site === "github.com")
    return `https://github.com/${rng.pick(EN.words)}/${rng.pick(EN.words)}`;
  if (site.startsWith("www.nytimes") || site.startsWith("www.bbc")) {
    const slug: string[] = [];
    for (let i = rng.range(3, 7); i > 0; i--) slug.push(EN.words[EN.sampler.pick(rng)]);
    return `https://${site}/${slug.join("-")}.html`;
  }
  let id = "";
  for (let i = rng.range(8, 14); i > 0; i--) id += URL_CHARS[rng.int(URL_CHARS.length)];
  return `https://${site}/${id}`;
}

function emojis(rng: Rng): string {
  let s = EMOJI[EMOJI_SAMPLER.pick(rng)];
  // People repeat the same emoji far more often than they mix them.
  while (rng.chance(0.3)) s += rng.chance(0.7) ? s.slice(0, 2) : EMOJI[EMOJI_SAMPLER.pick(rng)];
  return s;
}

function sentence(rng: Rng, l: Lang, names: readonly string[]): string {
  if (rng.chance(0.25)) return rng.pick(l.phrases);
  // Some code-switching into English, as in most multilingual chats.
  const words = l !== EN && rng.chance(0.12) ? EN : l;
  const parts: string[] = [];
  if (rng.chance(0.45)) parts.push(rng.pick(words.starters));
  const n = 1 + Math.floor(rng.exp(2.5));
  for (let i = 0; i < n; i++) {
    const r = rng.float();
    if (r < 0.02 && names.length > 0) parts.push(rng.pick(names));
    else if (r < 0.035) parts.push(`${rng.range(6, 22)}:${rng.chance(0.5) ? "00" : "30"}`);
    else if (r < 0.04) parts.push(`${rng.range(2, 120)}€`);
    else if (r < 0.5) parts.push(words.chunks[words.chunkSampler.pick(rng)]);
    else parts.push(words.words[words.sampler.pick(rng)]);
  }
  let s = parts.join(" ");
  if (rng.chance(0.4)) s = s.charAt(0).toUpperCase() + s.slice(1);
  const end = rng.float();
  if (end < 0.45) return s;
  if (end < 0.65) return s + ".";
  if (end < 0.82) return s + "?";
  if (end < 0.93) return s + "!";
  return s + (rng.chance(0.5) ? "..." : " :)");
}

/** Many short messages, fewer sentences and a long tail of paragraphs, as in real chats. */
function messageText(rng: Rng, l: Lang, names: readonly string[]): string {
  const r = rng.float();
  let text: string;
  if (r < 0.3) {
    text = rng.chance(0.8) ? rng.pick(l.short) : rng.pick(EN.short);
  } else if (r < 0.9) {
    text = sentence(rng, l, names);
    while (rng.chance(0.3)) text += " " + sentence(rng, l, names);
  } else {
    text = sentence(rng, l, names);
    for (let n = 2 + Math.floor(rng.exp(4)); n > 0; n--) {
      text += (rng.chance(0.1) ? "\n" : " ") + sentence(rng, l, names);
    }
  }
  if (rng.chance(0.15)) text += " " + emojis(rng);
  if (rng.chance(0.025)) text = rng.chance(0.4) ? url(rng) : `${text} ${url(rng)}`;
  return text;
}

// ---------------------------------------------------------------------------------------------
// People and chats

// biome-ignore format: compact data table
const FIRST_NAMES: readonly string[] = [
  "Anna", "Ben", "Carla", "David", "Elif", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Kemal",
  "Lena", "Mateo", "Nina", "Oskar", "Priya", "Quentin", "Rosa", "Samir", "Tess", "Umut",
  "Valentina", "Wen", "Ximena", "Yusuf", "Zoe", "Aisha", "Bruno", "Chloé", "Diego", "Emma", "Farah",
  "Giulia", "Hannes", "Isabel", "Jamal", "Katja", "Lucas", "Maya", "Noah", "Olga", "Pedro", "Rahul",
  "Sofia", "Tomás", "Ula", "Vikram", "Wiebke", "Yara", "Zainab", "Amélie", "Björn", "Camila",
  "Daan", "Eva", "Fatima", "Gabriel", "Hana", "Ivan", "Julia", "Kai", "Lars", "Marta", "Nils",
  "Paula", "Raphael", "Sara", "Theo", "Uwe", "Vera", "Mia", "Leon",
];
// biome-ignore format: compact data table
const LAST_NAMES: readonly string[] = [
  "Müller", "Schmidt", "García", "Silva", "Dubois", "de Vries", "Smith", "Jones", "Yılmaz",
  "Kowalski", "Rossi", "Novak", "Patel", "Nguyen", "Kim", "Fischer", "Weber", "López", "Santos",
  "Martin", "Bakker", "Brown", "Taylor", "Demir", "Nowak", "Bianchi", "Horvat", "Sharma", "Tran",
  "Park", "Wagner", "Becker", "Fernández", "Oliveira", "Bernard", "Jansen", "Wilson", "Evans",
  "Kaya", "Ricci",
];
// biome-ignore format: compact data table
const BUSINESSES: readonly string[] = [
  "Pizzeria Da Marco", "Dr. Weber Praxis", "DHL Express", "Salon Bella", "Autohaus Krüger",
  "Bäckerei Sonnenschein", "City Physio", "Hotel Miramar", "Taxi Central", "Yoga Loft",
];
// biome-ignore format: compact data table
const GROUP_SUBJECTS: readonly string[] = [
  "Family 👨‍👩‍👧", "Book club 📚", "Climbing crew", "Flat 3B", "Platform team", "Wedding planning 💍",
  "Football Tuesdays ⚽", "Uni friends", "Parents class 2b", "Lisbon trip 2024", "Neighbours",
  "Running club 🏃", "Board games night", "Cousins", "Choir", "Secret Santa 🎁", "Garden plot",
  "Band practice 🎸", "Kita Gruppe Sonne", "Sunday brunch", "Ski weekend ⛷️", "Old school",
  "Fantasy league", "Hiking 🥾", "Startup founders", "Birthday surprise for Mia",
];
// biome-ignore format: compact data table
const ABOUT: readonly string[] = [
  "Hey there! I am using WhatsApp.", "Available", "Busy", "At work", "🌍✈️", "Sleeping",
  "Only urgent calls", "Carpe diem", "☕☕☕", "In the gym", "Battery about to die",
];
// biome-ignore format: compact data table
const COUNTRIES: readonly (readonly [string, number])[] = [
  ["1", 10], ["44", 10], ["49", 11], ["34", 9], ["55", 11], ["91", 10], ["31", 9], ["33", 9],
  ["351", 9], ["52", 10], ["90", 10], ["48", 9],
];

// ---------------------------------------------------------------------------------------------
// Media

type MediaKind = 0 | 1 | 2;
const PHOTO: MediaKind = 0;
const VIDEO: MediaKind = 1;
const VOICE: MediaKind = 2;
const KINDS: readonly MediaKind[] = [PHOTO, VIDEO, VOICE];
/** Share of the media bytes per kind. */
const MEDIA_SHARE = [0.6, 0.3, 0.1];
const MIN_SIZE = [80_000, 1_000_000, 10_000];
/** Below this a kind's budget counts as used up (only the last file of a kind gets this small). */
const MIN_FILE = 10_000;
const MAX_SIZE = [3_000_000, 15_000_000, 300_000];
const MIME = ["image/jpeg", "video/mp4", "audio/ogg; codecs=opus"];
const FOLDER = ["Images", "Video", "Voice Notes"];
const PREFIX = ["IMG", "VID", "PTT"];
const EXT = ["jpg", "mp4", "opus"];
// biome-ignore format: compact data table
const PHOTO_DIMS: readonly (readonly [number, number])[] = [
  [1600, 1200], [1200, 1600], [1600, 900], [900, 1600], [1280, 960], [960, 1280], [1080, 1920],
  [1920, 1080], [1024, 768], [1600, 1600],
];
// biome-ignore format: compact data table
const VIDEO_DIMS: readonly (readonly [number, number])[] = [
  [848, 480], [480, 848], [1280, 720], [720, 1280], [640, 360],
];

/** Sizes skewed towards the small end, as messengers recompress most media. */
function mediaSize(rng: Rng, kind: MediaKind): number {
  const lo = Math.log(MIN_SIZE[kind]);
  const hi = Math.log(MAX_SIZE[kind]);
  return Math.round(Math.exp(lo + (hi - lo) * rng.float() ** 1.7));
}

/**
 * Picks the kind lagging furthest behind its byte share: with only a handful of large videos in a
 * small budget, independent draws would make the 60/30/10 split very noisy. With `left` (bytes
 * still allowed per kind), kinds with less than {@link MIN_FILE} left are skipped; returns null
 * when none is left.
 */
function mediaKind(rng: Rng, used: readonly number[], left?: readonly number[]): MediaKind | null {
  const total = used[0] + used[1] + used[2];
  let best: MediaKind | null = null;
  let bestScore = -Infinity;
  for (const k of KINDS) {
    if (left !== undefined && left[k] < MIN_FILE) continue;
    const score = MEDIA_SHARE[k] * total - used[k] + rng.float() * MEDIA_SHARE[k] * MIB;
    if (score > bestScore) {
      bestScore = score;
      best = k;
    }
  }
  return best;
}

const ZIGZAG = (() => {
  const order: number[] = [];
  for (let s = 0; s < 15; s++) {
    for (let i = 0; i <= s; i++) {
      const row = s % 2 === 0 ? s - i : i;
      const col = s - row;
      if (row < 8 && col < 8) order.push(row * 8 + col);
    }
  }
  return order;
})();

// biome-ignore format: compact data table
const LUMA_Q = [
  16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
  14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
  92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];
// biome-ignore format: compact data table
const CHROMA_Q = [
  17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
  47, 66, 99, 99, 99, 99, 99, 99, ...new Array<number>(32).fill(99),
];

/** Quality-80 scaling of the Annex K tables, stored in zigzag order like a real encoder does. */
function dqt(id: number, table: readonly number[]): number[] {
  return [
    id,
    ...ZIGZAG.map((i) => Math.min(255, Math.max(1, Math.floor((table[i] * 40 + 50) / 100)))),
  ];
}

function acSymbols(): number[] {
  const symbols = [0x00, 0xf0];
  for (let size = 1; size <= 10; size++)
    for (let run = 0; run < 16; run++) symbols.push((run << 4) | size);
  return symbols;
}

function dht(
  tableClassId: number,
  counts: readonly number[],
  symbols: readonly number[],
): number[] {
  return [tableClassId, ...counts, ...symbols];
}

function segment(marker: number, body: readonly number[]): number[] {
  const len = body.length + 2;
  return [0xff, marker, len >> 8, len & 0xff, ...body];
}

const JPEG_APP0_DQT = [
  ...segment(0xe0, [0x4a, 0x46, 0x49, 0x46, 0x00, 1, 1, 0, 0, 1, 0, 1, 0, 0]),
  ...segment(0xdb, [...dqt(0, LUMA_Q), ...dqt(1, CHROMA_Q)]),
];

const JPEG_DHT = (() => {
  const dc = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
  const ac = acSymbols();
  return segment(0xc4, [
    ...dht(0x00, [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0], dc),
    ...dht(0x10, [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d], ac),
    ...dht(0x01, [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dc),
    ...dht(0x11, [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77], ac),
  ]);
})();

function jpegHeader(width: number, height: number): Buffer {
  const sof = segment(0xc0, [
    8,
    height >> 8,
    height & 0xff,
    width >> 8,
    width & 0xff,
    3,
    1,
    0x22,
    0,
    2,
    0x11,
    1,
    3,
    0x11,
    1,
  ]);
  const sos = segment(0xda, [3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 0x3f, 0]);
  // Same segment order as libjpeg: APP0, DQT, SOF0, DHT, SOS.
  return Buffer.from([0xff, 0xd8, ...JPEG_APP0_DQT, ...sof, ...JPEG_DHT, ...sos]);
}

function mp4Header(size: number): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32BE(24, 0);
  b.write("ftypmp42", 4, "latin1");
  b.writeUInt32BE(0, 12);
  b.write("isommp42", 16, "latin1");
  // The mdat box runs to the end of the file, so its size is everything after ftyp.
  b.writeUInt32BE(size - 24, 24);
  b.write("mdat", 28, "latin1");
  return b;
}

const OGG_CRC = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let j = 0; j < 8; j++) r = r & 0x80000000 ? (r << 1) ^ 0x04c11db7 : r << 1;
    t[i] = r >>> 0;
  }
  return t;
})();

function oggPage(headerType: number, serial: number, seq: number, payload: Buffer): Buffer {
  const segments = Math.floor(payload.length / 255) + 1;
  const page = Buffer.alloc(27 + segments + payload.length);
  page.write("OggS", 0, "latin1");
  page[5] = headerType;
  page.writeUInt32LE(serial, 14);
  page.writeUInt32LE(seq, 18);
  page[26] = segments;
  for (let i = 0; i < segments - 1; i++) page[27 + i] = 255;
  page[27 + segments - 1] = payload.length % 255;
  payload.copy(page, 27 + segments);
  let crc = 0;
  for (const byte of page) crc = ((crc << 8) ^ OGG_CRC[((crc >>> 24) ^ byte) & 0xff]) >>> 0;
  page.writeUInt32LE(crc, 22);
  return page;
}

function opusHeader(serial: number): Buffer {
  const head = Buffer.alloc(19);
  head.write("OpusHead", 0, "latin1");
  head[8] = 1;
  head[9] = 1;
  head.writeUInt16LE(312, 10);
  head.writeUInt32LE(16000, 12);
  const vendor = Buffer.from("libopus 1.3.1", "latin1");
  const tags = Buffer.alloc(8 + 4 + vendor.length + 4);
  tags.write("OpusTags", 0, "latin1");
  tags.writeUInt32LE(vendor.length, 8);
  vendor.copy(tags, 12);
  return Buffer.concat([oggPage(0x02, serial, 0, head), oggPage(0x00, serial, 1, tags)]);
}

const CHUNK = 1 << 20;
let zeroChunk: Buffer | undefined;

/**
 * Writes header + `size - header - trailer` incompressible bytes + trailer and returns the
 * SHA-256. The body is an AES-256-CTR keystream: deterministic from the key and several GB/s,
 * far faster than any JS PRNG.
 */
function writeMediaFile(
  path: string,
  size: number,
  header: Buffer,
  trailer: Buffer,
  key: Buffer,
  jpegStuffing: boolean,
): string {
  zeroChunk ??= Buffer.alloc(CHUNK);
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  const hash = createHash("sha256");
  const fd = openSync(path, "wx");
  try {
    writeSync(fd, header);
    hash.update(header);
    let remaining = size - header.length - trailer.length;
    let carryFF = false;
    while (remaining > 0) {
      const n = Math.min(CHUNK, remaining);
      const chunk = cipher.update(zeroChunk.subarray(0, n));
      remaining -= n;
      if (jpegStuffing) carryFF = stuffJpeg(chunk, carryFF, remaining === 0);
      writeSync(fd, chunk);
      hash.update(chunk);
    }
    writeSync(fd, trailer);
    hash.update(trailer);
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

/**
 * Entropy-coded JPEG data never contains a marker: every 0xFF is followed by a stuffed 0x00.
 * Enforcing that keeps tools that scan for markers (EXIF readers, carvers) from tripping over
 * the random body; it costs well under 1% of the entropy.
 */
function stuffJpeg(chunk: Buffer, carryFF: boolean, last: boolean): boolean {
  if (carryFF) chunk[0] = 0;
  let i = carryFF ? 1 : 0;
  for (;;) {
    const at = chunk.indexOf(0xff, i);
    if (at < 0) return false;
    if (at === chunk.length - 1) {
      if (!last) return true;
      chunk[at] = 0;
      return false;
    }
    chunk[at + 1] = 0;
    i = at + 2;
  }
}

function yyyymmdd(ts: number): string {
  const d = new Date(ts);
  return (
    String(d.getUTCFullYear()) +
    String(d.getUTCMonth() + 1).padStart(2, "0") +
    String(d.getUTCDate()).padStart(2, "0")
  );
}

// ---------------------------------------------------------------------------------------------
// Database

const SCHEMA = `
CREATE TABLE contacts (
  id INTEGER PRIMARY KEY,
  jid TEXT NOT NULL UNIQUE,
  phone TEXT NOT NULL,
  display_name TEXT,
  given_name TEXT,
  push_name TEXT,
  about TEXT,
  is_business INTEGER NOT NULL DEFAULT 0,
  created_ts INTEGER NOT NULL
);
CREATE TABLE chats (
  id INTEGER PRIMARY KEY,
  jid TEXT NOT NULL UNIQUE,
  contact_id INTEGER REFERENCES contacts(id),
  is_group INTEGER NOT NULL DEFAULT 0,
  subject TEXT,
  created_ts INTEGER NOT NULL,
  last_message_id INTEGER,
  last_message_ts INTEGER,
  unread_count INTEGER NOT NULL DEFAULT 0,
  archived INTEGER NOT NULL DEFAULT 0,
  pinned INTEGER NOT NULL DEFAULT 0,
  muted_until INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE group_members (
  chat_id INTEGER NOT NULL REFERENCES chats(id),
  contact_id INTEGER NOT NULL REFERENCES contacts(id),
  is_admin INTEGER NOT NULL DEFAULT 0,
  joined_ts INTEGER NOT NULL,
  PRIMARY KEY (chat_id, contact_id)
) WITHOUT ROWID;
CREATE TABLE messages (
  id INTEGER PRIMARY KEY,
  chat_id INTEGER NOT NULL REFERENCES chats(id),
  key_id TEXT NOT NULL,
  from_me INTEGER NOT NULL,
  sender_contact_id INTEGER REFERENCES contacts(id),
  timestamp INTEGER NOT NULL,
  received_timestamp INTEGER,
  status INTEGER NOT NULL,
  text TEXT,
  media_id INTEGER,
  quoted_message_id INTEGER,
  starred INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX messages_key ON messages(chat_id, from_me, key_id);
CREATE INDEX messages_chat_ts ON messages(chat_id, timestamp);
CREATE INDEX messages_starred ON messages(chat_id) WHERE starred = 1;
CREATE TABLE receipts (
  message_id INTEGER NOT NULL REFERENCES messages(id),
  contact_id INTEGER NOT NULL REFERENCES contacts(id),
  delivered_ts INTEGER,
  read_ts INTEGER
);
CREATE UNIQUE INDEX receipts_message ON receipts(message_id, contact_id);
CREATE TABLE media (
  id INTEGER PRIMARY KEY,
  message_id INTEGER NOT NULL REFERENCES messages(id),
  path TEXT NOT NULL UNIQUE,
  mime_type TEXT NOT NULL,
  size INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  width INTEGER,
  height INTEGER,
  duration INTEGER
);
CREATE INDEX media_message ON media(message_id);
PRAGMA user_version = 1;
`;

function openDb(path: string): DatabaseSync {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = WAL");
  // Nothing needs to be durable until the final checkpoint (closeDb syncs), and fewer, larger
  // checkpoints matter once random key_id index inserts dirty pages all over a big file.
  db.exec("PRAGMA synchronous = OFF");
  db.exec("PRAGMA wal_autocheckpoint = 10000");
  // Those same inserts thrash the default 2 MB page cache on big data sets.
  db.exec("PRAGMA cache_size = -65536");
  return db;
}

/** Folds the WAL back into the main file, durably, so DIR is a self-contained set of files. */
function closeDb(db: DatabaseSync): void {
  try {
    db.exec("PRAGMA synchronous = FULL");
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  } finally {
    db.close();
  }
}

interface Chat {
  id: number;
  jid: string;
  contactId: number | null;
  members: number[];
  memberSampler: Sampler | null;
  lang: Lang;
  names: string[];
  readLagMean: number;
  lastReadTs: number;
  recent: number[];
  lastId: number;
  lastTs: number;
}

interface Gen {
  rng: Rng;
  mediaSeed: string;
  db: DatabaseSync;
  mediaDir: string;
  insMessage: StatementSync;
  insMedia: StatementSync;
  insReceipt: StatementSync;
  nextMessageId: number;
  nextMediaId: number;
  mediaUsed: number[];
  mediaFiles: number;
  fileCounters: Map<string, number>;
  /** Time the data set is "looked at": receipts and reads later than this have not happened. */
  now: number;
  touched: Set<Chat>;
}

function prepareInserts(db: DatabaseSync): Pick<Gen, "insMessage" | "insMedia" | "insReceipt"> {
  return {
    insMessage: db.prepare(
      "INSERT INTO messages (id, chat_id, key_id, from_me, sender_contact_id, timestamp," +
        " received_timestamp, status, text, media_id, quoted_message_id, starred)" +
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    insMedia: db.prepare(
      "INSERT INTO media (id, message_id, path, mime_type, size, sha256, width, height, duration)" +
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    insReceipt: db.prepare(
      "INSERT INTO receipts (message_id, contact_id, delivered_ts, read_ts) VALUES (?, ?, ?, ?)",
    ),
  };
}

/** WhatsApp numbers files per day and type: IMG-20240312-WA0007.jpg. */
function mediaPath(g: Gen, kind: MediaKind, ts: number): string {
  const prefix = `${FOLDER[kind]}/${PREFIX[kind]}-${yyyymmdd(ts)}-WA`;
  let n = g.fileCounters.get(prefix);
  if (n === undefined) {
    const row = g.db
      .prepare("SELECT count(*) AS n FROM media WHERE path LIKE ?")
      .get(`${prefix}%`) as { n: number };
    n = row.n;
  }
  let rel = `${prefix}${String(n).padStart(4, "0")}.${EXT[kind]}`;
  while (existsSync(join(g.mediaDir, rel))) {
    n++;
    rel = `${prefix}${String(n).padStart(4, "0")}.${EXT[kind]}`;
  }
  g.fileCounters.set(prefix, n + 1);
  return rel;
}

type MediaRow = [
  number,
  number,
  string,
  string,
  number,
  string,
  number | null,
  number | null,
  number | null,
];

/** Writes the file and returns its media row, to be inserted once the message row exists. */
function writeMedia(
  g: Gen,
  kind: MediaKind,
  size: number,
  ts: number,
  messageId: number,
): MediaRow {
  const rng = g.rng;
  const id = g.nextMediaId++;
  const rel = mediaPath(g, kind, ts);
  const path = join(g.mediaDir, rel);
  const key = createHash("sha256").update(`${g.mediaSeed}/${id}`).digest();
  let width: number | null = null;
  let height: number | null = null;
  let duration: number | null = null;
  let sha: string;
  if (kind === PHOTO) {
    [width, height] = rng.pick(PHOTO_DIMS);
    sha = writeMediaFile(
      path,
      size,
      jpegHeader(width, height),
      Buffer.from([0xff, 0xd9]),
      key,
      true,
    );
  } else if (kind === VIDEO) {
    [width, height] = rng.pick(VIDEO_DIMS);
    duration = Math.max(1, Math.round(size / 150_000));
    sha = writeMediaFile(path, size, mp4Header(size), Buffer.alloc(0), key, false);
  } else {
    duration = Math.max(1, Math.round(size / 2_000));
    sha = writeMediaFile(path, size, opusHeader(rng.next()), Buffer.alloc(0), key, false);
  }
  const seconds = ts / 1000;
  utimesSync(path, seconds, seconds);
  g.mediaUsed[kind] += size;
  g.mediaFiles++;
  return [id, messageId, rel, MIME[kind], size, sha, width, height, duration];
}

/** About 7% of people turn read receipts off; a fixed trait of the contact, not of a message. */
function sendsReadReceipts(contactId: number): boolean {
  return Math.imul(contactId, 0x9e3779b1) >>> 0 >= 0.07 * 4294967296;
}

/** Inserts one message (with its receipts and optional media file) at time `ts`. */
function emitMessage(
  g: Gen,
  chat: Chat,
  ts: number,
  media: { kind: MediaKind; size: number } | null,
): void {
  const rng = g.rng;
  const id = g.nextMessageId++;
  const isGroup = chat.contactId === null;
  const fromMe = rng.chance(isGroup ? 0.18 : 0.42);
  const sender = fromMe
    ? null
    : isGroup
      ? chat.members[chat.memberSampler!.pick(rng)]
      : chat.contactId;
  let text: string | null = messageText(rng, chat.lang, chat.names);
  let mediaRow: MediaRow | null = null;
  if (media !== null) {
    mediaRow = writeMedia(g, media.kind, media.size, ts, id);
    // Captions are occasional on photos and videos; voice notes never have one.
    if (media.kind === VOICE || rng.chance(0.7)) text = null;
  }
  const quoted = chat.recent.length > 0 && rng.chance(0.05) ? rng.pick(chat.recent) : null;
  const starred = rng.chance(0.004) ? 1 : 0;
  let status: number;
  let received: number;
  const receipts: [number, number | null, number | null][] = [];
  if (fromMe) {
    received = ts + 150 + Math.round(rng.exp(600));
    let allDelivered = true;
    let allRead = true;
    for (const contact of isGroup ? chat.members : [chat.contactId!]) {
      let delivered: number | null =
        received + Math.round(rng.chance(0.9) ? rng.exp(4_000) : rng.exp(3 * HOUR_MS));
      let read: number | null =
        delivered + Math.round(rng.exp(chat.readLagMean * (isGroup ? 3 : 1)));
      if (delivered > g.now) delivered = null;
      if (delivered === null || read > g.now || !sendsReadReceipts(contact)) read = null;
      allDelivered &&= delivered !== null;
      allRead &&= read !== null;
      receipts.push([contact, delivered, read]);
    }
    if (received > g.now) status = STATUS_PENDING;
    else if (allRead) status = STATUS_READ;
    else if (allDelivered) status = STATUS_DELIVERED;
    else status = STATUS_SENT;
  } else {
    received = ts + 200 + Math.round(rng.chance(0.97) ? rng.exp(1_500) : rng.exp(2 * HOUR_MS));
    status = received > chat.lastReadTs ? STATUS_DELIVERED : STATUS_READ;
  }
  g.insMessage.run(
    id,
    chat.id,
    rng.hex(10),
    fromMe ? 1 : 0,
    sender,
    ts,
    received,
    status,
    text,
    mediaRow === null ? null : mediaRow[0],
    quoted,
    starred,
  );
  if (mediaRow !== null) g.insMedia.run(...mediaRow);
  for (const [contact, delivered, read] of receipts) g.insReceipt.run(id, contact, delivered, read);
  chat.recent.push(id);
  if (chat.recent.length > 20) chat.recent.shift();
  chat.lastId = id;
  chat.lastTs = ts;
  g.touched.add(chat);
}

function updateChats(g: Gen): void {
  const update = g.db.prepare(
    "UPDATE chats SET last_message_id = ?2, last_message_ts = ?3, unread_count =" +
      " (SELECT count(*) FROM messages WHERE chat_id = ?1 AND from_me = 0 AND status < 13)" +
      " WHERE id = ?1",
  );
  g.db.exec("BEGIN");
  for (const chat of [...g.touched].sort((a, b) => a.id - b.id)) {
    update.run(chat.id, chat.lastId || null, chat.lastTs || null);
  }
  g.db.exec("COMMIT");
}

function checkSeed(seed: number): void {
  if (!Number.isFinite(seed)) throw new RangeError(`seed must be a finite number, got ${seed}`);
}

function checkCount(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
  }
}

function makeMediaDirs(mediaDir: string): void {
  for (const folder of FOLDER) mkdirSync(join(mediaDir, folder), { recursive: true });
}

function phoneNumber(rng: Rng): string {
  const [cc, len] = rng.pick(COUNTRIES);
  let n = String(rng.range(1, 9));
  for (let i = 1; i < len; i++) n += String(rng.int(10));
  return cc + n;
}

/**
 * Writes a deterministic, realistic messenger data set: `DIR/chat.db` (SQLite in WAL mode with
 * contacts, chats, group members, messages, receipts and media tables) and media files under
 * `DIR/Media/{Images,Video,Voice Notes}`. About one message in 15 carries a photo, video or voice
 * note until the media budget is used up. The same seed always gives the same rows and
 * byte-identical media files.
 *
 * @param dir Target folder; created if missing.
 * @param opts See {@link DemoDataOptions}.
 * @returns Paths and sizes of what was written.
 * @throws Error if `DIR/chat.db` already exists (nothing is overwritten).
 * @throws RangeError if `messages` is not a non-negative integer, `mediaMb` is negative or not
 *   finite, or `seed` is not finite.
 * @throws Any file-system or SQLite error; a partially written data set is left in place then.
 */
export function writeDemoData(dir: string, opts: DemoDataOptions = {}): DemoDataResult {
  const total = opts.messages ?? 20_000;
  const mediaMb = opts.mediaMb ?? 20;
  const seed = opts.seed ?? 1;
  checkCount("messages", total);
  if (!Number.isFinite(mediaMb) || mediaMb < 0) {
    throw new RangeError(`mediaMb must be a non-negative number, got ${mediaMb}`);
  }
  checkSeed(seed);
  const dbPath = join(dir, DB_NAME);
  const mediaDir = join(dir, MEDIA_NAME);
  mkdirSync(dir, { recursive: true });
  if (existsSync(dbPath)) throw new Error(`refusing to overwrite existing ${dbPath}`);
  makeMediaDirs(mediaDir);

  const rng = new Rng(seed, "base");
  const db = openDb(dbPath);
  try {
    db.exec(SCHEMA);

    // Bigger histories come from heavier users, not from more years of history.
    const directCount = Math.min(200, 25 + Math.floor(total / 800));
    const groupCount = Math.min(40, 6 + Math.floor(total / 4000));
    const contactCount = Math.min(800, directCount + 40 + Math.floor(total / 500));
    const perDay = Math.max(120, total / 730);
    const gapScale = 120 / perDay;

    // Timeline first: statuses depend on how long ago a message is relative to the end.
    const ts = new Float64Array(total);
    const chatIndex = new Int32Array(total);
    const chatCount = directCount + groupCount;
    const activity = new Sampler(shuffle(rng, zipfWeights(chatCount, 1.1)));
    let t = EPOCH_MS + 8 * HOUR_MS;
    let current = activity.pick(rng);
    for (let i = 0; i < total; i++) {
      if (i > 0) {
        if (rng.chance(0.7)) {
          t += 1_000 + rng.exp(45_000 * gapScale);
        } else {
          current = activity.pick(rng);
          t += 5_000 + rng.exp(1_800_000 * gapScale);
        }
        const timeOfDay = t % DAY_MS;
        if (timeOfDay < 7 * HOUR_MS && rng.chance(0.9)) {
          t = t - timeOfDay + 7 * HOUR_MS + rng.exp(HOUR_MS);
        }
      }
      ts[i] = Math.floor(t);
      chatIndex[i] = current;
    }
    const now = total > 0 ? ts[total - 1] + 30_000 : EPOCH_MS;

    const insContact = db.prepare(
      "INSERT INTO contacts (id, jid, phone, display_name, given_name, push_name, about," +
        " is_business, created_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    );
    const insChat = db.prepare(
      "INSERT INTO chats (id, jid, contact_id, is_group, subject, created_ts, archived, pinned," +
        " muted_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    );
    const insMember = db.prepare(
      "INSERT INTO group_members (chat_id, contact_id, is_admin, joined_ts) VALUES (?, ?, ?, ?)",
    );

    db.exec("BEGIN");
    const firstNames: string[] = [""];
    const contactJids: string[] = [""];
    const jids = new Set<string>();
    for (let id = 1; id <= contactCount; id++) {
      let phone = phoneNumber(rng);
      while (jids.has(phone)) phone = phoneNumber(rng);
      jids.add(phone);
      const business = rng.chance(0.04);
      const given = business ? rng.pick(BUSINESSES) : rng.pick(FIRST_NAMES);
      const r = rng.float();
      const display = business
        ? given
        : r < 0.7
          ? `${given} ${rng.pick(LAST_NAMES)}`
          : r < 0.85
            ? given
            : r < 0.95
              ? `${given} ${rng.pick(EMOJI)}`
              : null;
      firstNames.push(given);
      contactJids.push(`${phone}@s.whatsapp.net`);
      insContact.run(
        id,
        contactJids[id],
        `+${phone}`,
        display,
        business ? null : given,
        rng.chance(0.8) ? given : null,
        rng.chance(0.6) ? rng.pick(ABOUT) : null,
        business ? 1 : 0,
        EPOCH_MS - Math.round(rng.exp(400 * DAY_MS)),
      );
    }
    const contactOrder = shuffle(
      rng,
      Array.from({ length: contactCount }, (_, i) => i + 1),
    );
    const chats: Chat[] = [];
    for (let i = 0; i < chatCount; i++) {
      const id = i + 1;
      const isGroup = i >= directCount;
      let jid: string;
      let contactId: number | null = null;
      let members: number[] = [];
      let subject: string | null = null;
      if (isGroup) {
        jid = `120363${String(rng.next()).padStart(10, "0")}${String(rng.int(1e8)).padStart(8, "0")}@g.us`;
        subject = GROUP_SUBJECTS[(i - directCount) % GROUP_SUBJECTS.length];
        const size = rng.range(3, Math.min(20, contactCount));
        members = shuffle(rng, contactOrder.slice()).slice(0, size);
      } else {
        contactId = contactOrder[i % contactCount];
        jid = contactJids[contactId];
        members = [contactId];
      }
      const muted = rng.chance(isGroup ? 0.35 : 0.03);
      const mutedUntil = muted
        ? rng.chance(0.5)
          ? -1
          : now + Math.round(rng.exp(30 * DAY_MS))
        : 0;
      const readLagMean = muted ? 2 * DAY_MS : rng.chance(0.2) ? 6 * HOUR_MS : 20 * 60_000;
      insChat.run(
        id,
        jid,
        contactId,
        isGroup ? 1 : 0,
        subject,
        EPOCH_MS - Math.round(rng.exp(200 * DAY_MS)),
        rng.chance(0.08) ? 1 : 0,
        i < 3 && rng.chance(0.7) ? 1 : 0,
        mutedUntil,
      );
      if (isGroup) {
        members.forEach((m, k) => {
          insMember.run(
            id,
            m,
            k === 0 || rng.chance(0.1) ? 1 : 0,
            EPOCH_MS - rng.int(300) * DAY_MS,
          );
        });
      }
      chats.push({
        id,
        jid,
        contactId,
        members,
        memberSampler: isGroup ? new Sampler(zipfWeights(members.length, 1)) : null,
        lang: chatLang(jid),
        names: members.map((m) => firstNames[m]),
        readLagMean,
        lastReadTs: now - Math.round(rng.exp(readLagMean)),
        recent: [],
        lastId: 0,
        lastTs: 0,
      });
    }
    db.exec("COMMIT");

    const g: Gen = {
      rng,
      mediaSeed: `locket-demo-data/media/base/${seed}`,
      db,
      mediaDir,
      ...prepareInserts(db),
      nextMessageId: 1,
      nextMediaId: 1,
      mediaUsed: [0, 0, 0],
      mediaFiles: 0,
      fileCounters: new Map(),
      now,
      touched: new Set(),
    };
    const budget = Math.floor(mediaMb * MIB);
    let mediaLeft = budget >= MIN_FILE;
    for (let start = 0; start < total; start += BATCH) {
      const end = Math.min(total, start + BATCH);
      db.exec("BEGIN");
      for (let i = start; i < end; i++) {
        let media: { kind: MediaKind; size: number } | null = null;
        if (mediaLeft && rng.chance(MEDIA_RATE)) {
          // Each kind gets its share of the budget, so a single 15 MB video cannot crowd voice
          // notes out of a small budget; the last file of a kind is cut to fit it exactly.
          const left = KINDS.map((k) => Math.floor(MEDIA_SHARE[k] * budget) - g.mediaUsed[k]);
          const kind = mediaKind(rng, g.mediaUsed, left);
          if (kind === null) mediaLeft = false;
          else media = { kind, size: Math.min(mediaSize(rng, kind), left[kind]) };
        }
        emitMessage(g, chats[chatIndex[i]], ts[i], media);
      }
      db.exec("COMMIT");
      opts.onProgress?.(end, total);
    }
    updateChats(g);
    const mediaBytes = g.mediaUsed[0] + g.mediaUsed[1] + g.mediaUsed[2];
    closeDb(db);
    return {
      dbPath,
      mediaDir,
      messages: total,
      mediaFiles: g.mediaFiles,
      bytes: statSync(dbPath).size + mediaBytes,
    };
  } catch (err) {
    if (db.isOpen) db.close();
    throw err;
  }
}

/**
 * Simulates one day of chat activity on a data set written by {@link writeDemoData}: first a
 * fraction of the existing messages get status/receipt updates (random rows across the table, or
 * the newest rows with `recent`), then new messages are appended over the 24 hours after the
 * newest one (with receipts, and media files for `newMedia` of them), and the affected chats'
 * last message and unread count are updated. Deterministic for a given data set and seed.
 *
 * @param dir Folder holding `chat.db` and `Media`.
 * @param opts See {@link DayOptions}.
 * @returns Counts of what changed.
 * @throws Error if `DIR/chat.db` does not exist.
 * @throws RangeError if a count is not a non-negative integer, `statusUpdates` is outside
 *   [0, 1], or `seed` is not finite.
 * @throws Any file-system or SQLite error (the database changes are committed per phase).
 */
export function simulateDay(dir: string, opts: DayOptions = {}): DayResult {
  const newMessages = opts.newMessages ?? 500;
  const fraction = opts.statusUpdates ?? 0.01;
  const seed = opts.seed ?? 2;
  checkCount("newMessages", newMessages);
  if (!(fraction >= 0 && fraction <= 1)) {
    throw new RangeError(`statusUpdates must be a fraction in [0, 1], got ${fraction}`);
  }
  const newMedia = Math.min(newMessages, opts.newMedia ?? Math.round(newMessages * MEDIA_RATE));
  checkCount("newMedia", newMedia);
  checkSeed(seed);
  const dbPath = join(dir, DB_NAME);
  const mediaDir = join(dir, MEDIA_NAME);
  if (!existsSync(dbPath)) throw new Error(`no data set at ${dir}: ${dbPath} does not exist`);
  makeMediaDirs(mediaDir);

  const rng = new Rng(seed, "day");
  const db = openDb(dbPath);
  try {
    const stats = db
      .prepare(
        "SELECT count(*) AS n, coalesce(max(id), 0) AS maxId, coalesce(max(timestamp), ?) AS maxTs" +
          " FROM messages",
      )
      .get(EPOCH_MS) as { n: number; maxId: number; maxTs: number };
    const maxMediaId = (
      db.prepare("SELECT coalesce(max(id), 0) AS m FROM media").get() as { m: number }
    ).m;
    const dayStart = stats.maxTs + 60_000;
    const dayEnd = dayStart + DAY_MS;

    const firstNames = new Map<number, string>();
    for (const row of db.prepare("SELECT id, given_name, display_name FROM contacts").all()) {
      const r = row as { id: number; given_name: string | null; display_name: string | null };
      firstNames.set(r.id, r.given_name ?? r.display_name ?? "");
    }
    const membersOf = new Map<number, number[]>();
    for (const row of db
      .prepare("SELECT chat_id, contact_id FROM group_members ORDER BY chat_id, contact_id")
      .all()) {
      const r = row as { chat_id: number; contact_id: number };
      const list = membersOf.get(r.chat_id) ?? [];
      list.push(r.contact_id);
      membersOf.set(r.chat_id, list);
    }
    const counts = new Map<number, number>();
    for (const row of db
      .prepare("SELECT chat_id, count(*) AS n FROM messages GROUP BY chat_id")
      .all()) {
      const r = row as { chat_id: number; n: number };
      counts.set(r.chat_id, r.n);
    }
    const chats: Chat[] = [];
    const chatById = new Map<number, Chat>();
    for (const row of db
      .prepare(
        "SELECT id, jid, contact_id, muted_until, last_message_id, last_message_ts FROM chats ORDER BY id",
      )
      .all()) {
      const r = row as {
        id: number;
        jid: string;
        contact_id: number | null;
        muted_until: number;
        last_message_id: number | null;
        last_message_ts: number | null;
      };
      const members = r.contact_id === null ? (membersOf.get(r.id) ?? []) : [r.contact_id];
      if (members.length === 0) continue;
      const muted = r.muted_until === -1 || r.muted_until > dayEnd;
      const readLagMean = muted ? 2 * DAY_MS : 30 * 60_000;
      const chat: Chat = {
        id: r.id,
        jid: r.jid,
        contactId: r.contact_id,
        members,
        memberSampler: r.contact_id === null ? new Sampler(zipfWeights(members.length, 1)) : null,
        lang: chatLang(r.jid),
        names: members.map((m) => firstNames.get(m) ?? ""),
        readLagMean,
        lastReadTs: dayEnd - Math.round(rng.exp(readLagMean)),
        recent: r.last_message_id === null ? [] : [r.last_message_id],
        lastId: r.last_message_id ?? 0,
        lastTs: r.last_message_ts ?? 0,
      };
      chats.push(chat);
      chatById.set(chat.id, chat);
    }

    const g: Gen = {
      rng,
      mediaSeed: `locket-demo-data/media/day/${seed}`,
      db,
      mediaDir,
      ...prepareInserts(db),
      nextMessageId: stats.maxId + 1,
      nextMediaId: maxMediaId + 1,
      mediaUsed: [0, 0, 0],
      mediaFiles: 0,
      fileCounters: new Map(),
      now: dayEnd,
      touched: new Set(),
    };

    // Status updates first, so that they only hit rows that existed before the day.
    const updates = Math.round(fraction * stats.n);
    let ids: number[];
    if (opts.recent) {
      ids = db
        .prepare("SELECT id FROM messages ORDER BY id DESC LIMIT ?")
        .all(updates)
        .map((r) => (r as { id: number }).id);
    } else {
      ids = db
        .prepare("SELECT id FROM messages ORDER BY id")
        .all()
        .map((r) => (r as { id: number }).id);
      for (let i = 0; i < updates; i++) {
        const j = i + rng.int(ids.length - i);
        const tmp = ids[i];
        ids[i] = ids[j];
        ids[j] = tmp;
      }
      ids = ids.slice(0, updates).sort((a, b) => a - b);
    }
    const getMsg = db.prepare("SELECT chat_id, from_me, status FROM messages WHERE id = ?");
    const setStatus = db.prepare("UPDATE messages SET status = ? WHERE id = ?");
    const setReceived = db.prepare("UPDATE messages SET received_timestamp = ? WHERE id = ?");
    const setDelivered = db.prepare(
      "UPDATE receipts SET delivered_ts = coalesce(delivered_ts, ?) WHERE message_id = ?",
    );
    const setRead = db.prepare(
      "UPDATE receipts SET delivered_ts = coalesce(delivered_ts, ?1), read_ts = coalesce(read_ts, ?1)" +
        " WHERE message_id = ?2",
    );
    db.exec("BEGIN");
    for (const id of ids) {
      const m = getMsg.get(id) as { chat_id: number; from_me: number; status: number };
      const at = dayStart + rng.int(DAY_MS);
      if (m.status >= STATUS_READ) {
        // A re-delivered receipt (second device, reinstall) rewrites the row even when the
        // status is final, which is what scatters small writes over old pages in real databases.
        setReceived.run(at, id);
      } else if (m.from_me === 0) {
        setStatus.run(STATUS_READ, id);
      } else {
        const next =
          m.status < STATUS_SENT
            ? STATUS_SENT
            : m.status < STATUS_DELIVERED
              ? STATUS_DELIVERED
              : STATUS_READ;
        setStatus.run(next, id);
        if (next === STATUS_DELIVERED) setDelivered.run(at, id);
        if (next === STATUS_READ) setRead.run(at, id);
      }
      const chat = chatById.get(m.chat_id);
      if (chat !== undefined) g.touched.add(chat);
    }
    db.exec("COMMIT");

    // Bursty gaps, squeezed into the day so that consecutive days never overlap.
    const gaps: number[] = [];
    const switches: boolean[] = [];
    let sum = 0;
    for (let i = 0; i < newMessages; i++) {
      const sw = i === 0 || !rng.chance(0.7);
      const gap = sw ? 5_000 + rng.exp(1_800_000) : 1_000 + rng.exp(45_000);
      gaps.push(gap);
      switches.push(sw);
      sum += gap;
    }
    const scale = sum > 0 ? (DAY_MS - 120_000) / sum : 0;
    const activity = new Sampler(chats.map((c) => 1 + (counts.get(c.id) ?? 0)));
    const mediaAt = new Set<number>();
    {
      const order = Array.from({ length: newMessages }, (_, i) => i);
      for (let i = 0; i < newMedia; i++) {
        const j = i + rng.int(order.length - i);
        const tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
        mediaAt.add(order[i]);
      }
    }
    let t = dayStart;
    let chat = chats.length > 0 ? chats[activity.pick(rng)] : undefined;
    db.exec("BEGIN");
    for (let i = 0; i < newMessages && chat !== undefined; i++) {
      if (i > 0) t += gaps[i] * scale;
      if (i > 0 && switches[i]) chat = chats[activity.pick(rng)];
      let media: { kind: MediaKind; size: number } | null = null;
      if (mediaAt.has(i)) {
        const kind = mediaKind(rng, g.mediaUsed) ?? PHOTO;
        media = { kind, size: mediaSize(rng, kind) };
      }
      emitMessage(g, chat, Math.floor(t), media);
      if ((i + 1) % BATCH === 0) {
        db.exec("COMMIT");
        db.exec("BEGIN");
      }
    }
    db.exec("COMMIT");
    updateChats(g);
    closeDb(db);
    return {
      newMessages: g.nextMessageId - stats.maxId - 1,
      updatedRows: ids.length,
      newMediaFiles: g.mediaFiles,
      newMediaBytes: g.mediaUsed[0] + g.mediaUsed[1] + g.mediaUsed[2],
    };
  } catch (err) {
    if (db.isOpen) {
      if (db.isTransaction) db.exec("ROLLBACK");
      db.close();
    }
    throw err;
  }
}
