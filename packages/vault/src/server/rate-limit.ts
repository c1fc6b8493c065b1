/**
 * Token-bucket rate limits per key (client IP, account), on top of the guess limit: they slow
 * down floods and scans; the guess limit is what makes short passwords safe.
 */
export interface RateLimit {
  /** Requests allowed in a burst. */
  readonly burst: number;
  /** Requests added back per second. */
  readonly perSecond: number;
}

export class RateLimiter {
  private readonly limit: RateLimit;
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly maxKeys: number;

  constructor(limit: RateLimit, maxKeys = 100_000) {
    this.limit = limit;
    this.maxKeys = maxKeys;
  }

  /** Takes one token for `key`; false when the bucket is empty. */
  take(key: string, now = Date.now()): boolean {
    let b = this.buckets.get(key);
    if (!b) {
      // Bound memory under a flood of distinct keys: forget the oldest bucket.
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
      b = { tokens: this.limit.burst, at: now };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(this.limit.burst, b.tokens + ((now - b.at) / 1000) * this.limit.perSecond);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}
