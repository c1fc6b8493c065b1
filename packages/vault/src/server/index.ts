/** @locket/vault/server: the key vault server (Node). */
export * from "../store/store.ts";
export * from "./app.ts";
export * from "./auth.ts";
export * from "./log.ts";
export * from "./rate-limit.ts";
export * from "./serve.ts";
export * from "./setup.ts";
