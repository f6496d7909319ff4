/**
 * voxcart on Railway, as Infrastructure as Code: `railway config plan` shows what this file changes in the linked
 * project, `railway config apply` makes it so (README: Deploy, Railway). One Redis and one service per voxcart
 * service, each built from its own Dockerfile (only that service's dependencies) in this repository.
 *
 * - Start commands bind `::` (Railway's private network may be IPv6 only) and Railway's `$PORT`: the gateway
 *   serves everything on it, a worker its /healthz and /metrics (METRICS_PORT). Healthchecks hit /healthz.
 * - Draining: on a redeploy the old gateway gets SIGTERM, keeps its live calls up to DRAIN_SECONDS (600 s), and
 *   Railway kills it only after drainingSeconds (630 s). A worker hands its calls to its peers in under a second.
 * - Secrets (Twilio, provider keys) are never written here: `preserve()` keeps what is set in the dashboard or
 *   with `railway variables --set`.
 */
import { defineRailway, github, preserve, redis, service } from "railway/iac";

/** The GitHub repository Railway builds from: your fork of voxcart. */
const REPO = "your-github-user/voxcart";
const BRANCH = "main";

/** Gateway: longest a live call is kept after SIGTERM; Railway's SIGKILL comes 30 s after it. */
const GATEWAY_DRAIN_SECONDS = 600;
/** Workers drain by handing their leases over: well under a second; 30 s is margin. */
const WORKER_DRAINING_SECONDS = 30;

function watch(svc: string): string[] {
  return [`/services/${svc}/**`, "/libs/common/**", "/uv.lock", "/pyproject.toml"];
}

export default defineRailway((ctx, project) => {
  const cache = redis("Redis");

  const gateway = service("gateway", {
    source: github(REPO, { branch: BRANCH }),
    build: { builder: "DOCKERFILE", dockerfilePath: "services/gateway/Dockerfile", watchPatterns: watch("gateway") },
    deploy: {
      startCommand: `/bin/sh -c 'exec env HOST=:: PORT="$PORT" python -m voxcart.gateway'`,
      healthcheckPath: "/healthz",
      healthcheckTimeout: 120,
      drainingSeconds: GATEWAY_DRAIN_SECONDS + 30,
      restartPolicyType: "ON_FAILURE",
      restartPolicyMaxRetries: 10,
    },
    replicas: 1,
    env: {
      REDIS_URL: cache.env.REDIS_URL,
      ENV: "production",
      DRAIN_SECONDS: String(GATEWAY_DRAIN_SECONDS),
      TWILIO_ACCOUNT_SID: preserve(),
      TWILIO_AUTH_TOKEN: preserve(),
      API_TOKEN: preserve(),
    },
  });

  const stt = service("stt", {
    source: github(REPO, { branch: BRANCH }),
    build: { builder: "DOCKERFILE", dockerfilePath: "services/stt/Dockerfile", watchPatterns: watch("stt") },
    deploy: {
      startCommand: `/bin/sh -c 'exec env HOST=:: METRICS_PORT="$PORT" python -m voxcart.stt'`,
      healthcheckPath: "/healthz",
      healthcheckTimeout: 300,
      drainingSeconds: WORKER_DRAINING_SECONDS,
      restartPolicyType: "ON_FAILURE",
      restartPolicyMaxRetries: 10,
    },
    replicas: ctx.isEnvironment("production") ? 2 : 1,
    env: {
      REDIS_URL: cache.env.REDIS_URL,
      STT_PROVIDER: "pocketsphinx",
      DEEPGRAM_API_KEY: preserve(),
    },
  });

  const brain = service("brain", {
    source: github(REPO, { branch: BRANCH }),
    build: { builder: "DOCKERFILE", dockerfilePath: "services/brain/Dockerfile", watchPatterns: watch("brain") },
    deploy: {
      startCommand: `/bin/sh -c 'exec env HOST=:: METRICS_PORT="$PORT" python -m voxcart.brain'`,
      healthcheckPath: "/healthz",
      healthcheckTimeout: 300,
      drainingSeconds: WORKER_DRAINING_SECONDS,
      restartPolicyType: "ON_FAILURE",
      restartPolicyMaxRetries: 10,
    },
    replicas: ctx.isEnvironment("production") ? 2 : 1,
    env: {
      REDIS_URL: cache.env.REDIS_URL,
      BRAIN_MODE: "rules",
      STORE_URL: preserve(),
      LLM_BASE_URL: preserve(),
      LLM_MODEL: preserve(),
      LLM_API_KEY: preserve(),
    },
  });

  const tts = service("tts", {
    source: github(REPO, { branch: BRANCH }),
    build: { builder: "DOCKERFILE", dockerfilePath: "services/tts/Dockerfile", watchPatterns: watch("tts") },
    deploy: {
      startCommand: `/bin/sh -c 'exec env HOST=:: METRICS_PORT="$PORT" python -m voxcart.tts'`,
      healthcheckPath: "/healthz",
      healthcheckTimeout: 300,
      drainingSeconds: WORKER_DRAINING_SECONDS,
      restartPolicyType: "ON_FAILURE",
      restartPolicyMaxRetries: 10,
    },
    replicas: ctx.isEnvironment("production") ? 2 : 1,
    env: {
      REDIS_URL: cache.env.REDIS_URL,
      TTS_PROVIDER: "espeak",
      ELEVENLABS_API_KEY: preserve(),
    },
  });

  return project("voxcart", { resources: [cache, gateway, stt, brain, tts] });
});
