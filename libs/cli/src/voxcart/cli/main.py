"""The ``voxcart`` command: ``up``, ``serve``, ``call``, ``chat``, ``demo``, ``bench speech``, ``bench bargein``,
``bench load``, ``bench soak``, ``bench gateway``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from voxcart.common.settings import Settings, SettingsError, load_settings

__all__ = ["main"]


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise SystemExit(f"voxcart: bad setting: {exc}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    """The same as ``python -m voxcart.<service>`` (what each service's image runs without this CLI)."""
    if args.service == "gateway":
        from voxcart.gateway.__main__ import main as serve_service
    elif args.service == "stt":
        from voxcart.stt.__main__ import main as serve_service
    elif args.service == "brain":
        from voxcart.brain.__main__ import main as serve_service
    else:
        from voxcart.tts.__main__ import main as serve_service
    return serve_service()


def cmd_up(args: argparse.Namespace) -> int:
    from .stack import Stack, StackError

    settings = _settings()
    stack = Stack(redis_url=settings.redis_url, port=args.port or settings.port)
    try:
        stack.start()
    except StackError as exc:
        stack.stop()
        print(f"voxcart up: {exc}", file=sys.stderr)
        return 1
    print(f"voxcart is up: gateway {stack.gateway_url} (Twilio webhook: POST /twilio/voice), redis {stack.redis_url}")
    print('place a simulated call from another terminal:  voxcart call "where is my order"   (Ctrl-C stops)')
    try:
        while all(p.poll() is None for procs in stack.processes.values() for p in procs):
            time.sleep(0.5)
        print("voxcart up: a service exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


def cmd_call(args: argparse.Namespace) -> int:
    from .calling import place_call

    settings = _settings()
    return asyncio.run(place_call(settings, args.url, args.lines, args.from_number, args.wav))


def _seconds(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected more than 0 seconds")
    return value


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat import run_chat

    settings = _settings()
    try:
        return asyncio.run(run_chat(settings, args.from_number, args.script, args.json, args.timeout, args.brain))
    except KeyboardInterrupt:
        return 130


def cmd_demo(args: argparse.Namespace) -> int:
    from .calling import DEMO_LINES, place_call
    from .stack import Stack, StackError

    settings = _settings()
    stack = Stack(redis_url=settings.redis_url, port=0, log_path=args.log)
    print("starting the stack (redis, gateway, stt, brain, tts)...", flush=True)
    try:
        stack.start()
        print(f"stack up; service logs in {args.log}\n", flush=True)
        lines = args.lines or DEMO_LINES
        return asyncio.run(place_call(settings, stack.gateway_url, lines, args.from_number, args.wav))
    except StackError as exc:
        print(f"voxcart demo: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


def cmd_bench_speech(args: argparse.Namespace) -> int:
    from .bench.speech import main as bench_speech

    return bench_speech(args.json, quick=args.quick, repeat=args.repeat)


def cmd_bench_bargein(args: argparse.Namespace) -> int:
    from .bench.bargein import main as bench_bargein

    return bench_bargein(
        _settings(),
        calls=args.calls,
        quick=args.quick,
        gateway_url=args.gateway_url,
        concurrency=args.concurrency,
        json_path=args.json,
        log_path=args.log,
    )


def cmd_bench_load(args: argparse.Namespace) -> int:
    from .bench.load import QUICK_SCRIPT, LoadOptions, parse_ramp, parse_replicas, read_script
    from .bench.load import main as bench_load

    try:
        options = LoadOptions(
            calls=args.calls,
            ramp=parse_ramp(args.ramp) if args.ramp else (),
            **({"script": read_script(args.script)} if args.script else {"script": QUICK_SCRIPT} if args.quick else {}),
            gateway_url=args.gateway_url.rstrip("/") if args.gateway_url else None,
            redis_url=args.redis_url or "",
            stagger_s=args.stagger,
            baseline=args.baseline,
            json_path=args.json or None,
            chart_path=args.chart,
            compare_path=args.compare,
            log_path=args.log,
            runs=args.runs,
            replicas=parse_replicas(args.replicas) if args.replicas else {},
        )
    except ValueError as exc:
        print(f"voxcart bench load: {exc}", file=sys.stderr)
        return 2
    return bench_load(_settings(), options)


def cmd_bench_gateway(args: argparse.Namespace) -> int:
    from .bench.gateway import GatewayOptions, parse_steps
    from .bench.gateway import main as bench_gateway

    try:
        options = GatewayOptions(
            steps=parse_steps(args.calls),
            hold_s=args.hold,
            stagger_s=args.stagger,
            procs=args.procs,
            pin=args.pin,
            json_path=args.json or None,
            log_path=args.log,
        )
    except ValueError as exc:
        print(f"voxcart bench gateway: {exc}", file=sys.stderr)
        return 2
    return bench_gateway(options)


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from .bench.soak import SoakOptions
    from .bench.soak import main as bench_soak

    settings = _settings()
    try:
        options = SoakOptions(
            calls=args.calls,
            concurrency=args.concurrency,
            retention_s=args.retention,
            gateway_url=args.gateway_url,
            redis_url=args.redis_url or (settings.redis_url if args.gateway_url else ""),
            json_path=args.json,
            log_path=args.log,
            warmup_calls=args.warmup,
            max_growth_pct=args.max_growth,
            short=args.short,
        )
    except ValueError as exc:
        print(f"voxcart bench soak: {exc}", file=sys.stderr)
        return 2
    return bench_soak(settings, options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxcart", description="An open-source voice agent for shops.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole local stack in this terminal")
    up.add_argument("--port", type=int, default=0, help="gateway port (default: PORT or 8080)")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="run one service (what a container runs)")
    serve.add_argument("service", choices=["gateway", "stt", "brain", "tts"])
    serve.set_defaults(func=cmd_serve)

    for name, func, help_text in (
        ("call", cmd_call, "place a simulated phone call through the Twilio protocol"),
        ("demo", cmd_demo, "start the stack, place a simulated call, stop"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("lines", nargs="*", help="what the caller says, one argument per turn; '#10023' keys digits")
        p.add_argument("--from", dest="from_number", default="+15555550123", help="the caller's number")
        p.add_argument("--wav", default=None, help="save both sides of the call to this WAV file")
        if name == "call":
            p.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's base URL")
        else:
            p.add_argument("--log", default="voxcart-demo.log", help="where the services' logs go")
        p.set_defaults(func=func)

    chat = sub.add_parser(
        "chat",
        help="the same dialog by text, through the bus (no audio)",
        description="Opens a call on the bus as the gateway does and talks to a brain replica by text: the ones "
        "serving REDIS_URL, else one in this process (Redis itself is found or started as by `voxcart up`). "
        "Caller lines: typed at a prompt, read from --script, or piped in. A blank line or '# ...' is skipped; "
        "'#10023#' or 'dtmf:1 0 0 2 3#' keys digits; anything else is said.",
    )
    chat.add_argument("--from", dest="from_number", default="", help="the caller's number (default: withheld)")
    chat.add_argument("--script", metavar="FILE", default=None, help="caller lines from FILE, one per line")
    chat.add_argument("--json", action="store_true", help="print one JSON object per agent turn")
    chat.add_argument("--timeout", type=_seconds, default=15.0, metavar="S", help="seconds to wait for each reply")
    chat.add_argument(
        "--brain",
        choices=["auto", "local", "running"],
        default="auto",
        help="auto: the brain replicas serving Redis if any, else one in this process; local: always one in this "
        "process; running: only the ones serving",
    )
    chat.set_defaults(func=cmd_chat)

    bench = sub.add_parser("bench", help="measure voxcart's components on this machine")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    speech = bench_sub.add_parser(
        "speech",
        help="speech recognition and synthesis on a phone line: accuracy, noise, latency, memory",
        description="In-domain caller speech (clean and noisy), real recorded speech (Debian's Asterisk prompts; "
        "install them with scripts/speech-data.sh), and performance. Prints a table; --json writes everything.",
    )
    speech.add_argument("--json", metavar="FILE", default=None, help="also write the full result as JSON")
    speech.add_argument("--quick", action="store_true", help="a small subset of everything (seconds, not minutes)")
    speech.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="speak each in-domain sentence N times (1..10), varied"
    )
    speech.set_defaults(func=cmd_bench_speech)
    bargein = bench_sub.add_parser(
        "bargein",
        help="barge-in through the real protocol: reaction time, stale audio, missed and false interruptions",
        description="Scripted calls talk over the agent (interruptions early/mid/late in replies, backchannels, "
        "noise bursts, long pauses) through the Twilio protocol against the stack (started here unless "
        "--gateway-url is given). Prints a table beside issue 5's targets; --json writes everything.",
    )
    bargein.add_argument("--calls", type=int, default=15, metavar="N", help="scripted calls (4 interruptions each)")
    bargein.add_argument("--quick", action="store_true", help="one short call: 2 interruptions, 1 backchannel, 1 noise")
    bargein.add_argument("--json", metavar="FILE", default=None, help="also write the full result as JSON")
    bargein.add_argument("--gateway-url", default=None, help="a running gateway to call instead of starting the stack")
    bargein.add_argument("--concurrency", type=int, default=2, metavar="N", help="calls at a time (default 2)")
    bargein.add_argument("--log", default="voxcart-bench-bargein.log", help="where the started stack's logs go")
    bargein.set_defaults(func=cmd_bench_bargein)
    load = bench_sub.add_parser(
        "load",
        help="N concurrent calls through the real protocol: turn latency and its breakdown, pacing, CPU, memory",
        description="Concurrent scripted calls through the Twilio protocol against the stack (started here unless "
        "--gateway-url is given): turn latency p50/p95/p99 and its breakdown, barge-in reaction, pacing jitter and "
        "underruns, inbound bus age, CPU and memory per service and per call, and whether real time held. "
        "--ramp finds the largest N that holds; --baseline inproc measures what the bus adds per turn.",
    )
    load.add_argument("--calls", type=int, default=10, metavar="N", help="concurrent calls (default 10)")
    load.add_argument("--ramp", default=None, metavar="N,N,...", help="steps of N calls, e.g. 5,10,20,30")
    load.add_argument("--script", default=None, metavar="FILE", help="caller lines, one per line ('> text' talks over)")
    load.add_argument("--quick", action="store_true", help="a short call: one question and a goodbye")
    load.add_argument("--stagger", type=float, default=0.25, metavar="S", help="seconds between call starts")
    load.add_argument("--baseline", choices=["inproc"], default=None, help="also run the dialog in-process, no bus")
    load.add_argument("--json", metavar="FILE", default="voxcart-bench-load.json", help="the full result ('' for none)")
    load.add_argument("--chart", metavar="FILE.png", default=None, help="draw latency, breakdown, CPU, memory")
    load.add_argument("--compare", metavar="FILE", default=None, help="print ratios against an earlier --json")
    load.add_argument("--gateway-url", default=None, help="a running gateway to call instead of starting the stack")
    load.add_argument("--redis-url", default=None, help="that stack's Redis (default REDIS_URL)")
    load.add_argument("--log", default="voxcart-bench-load.log", help="where the started stack's logs go")
    load.add_argument(
        "--runs", type=int, default=1, metavar="N", help="runs of each step, medians reported (default 1)"
    )
    load.add_argument("--replicas", default=None, metavar="SVC=N,...", help="worker processes, e.g. stt=2,brain=1")
    load.set_defaults(func=cmd_bench_load)
    soak = bench_sub.add_parser(
        "soak",
        help="many short calls, N at a time: memory flat after warm-up, every Redis key with a TTL and gone after "
        "its retention",
        description="Short scripted calls (greeting, a question, goodbye) through the Twilio protocol against the "
        "stack (started here, with CALL_RETENTION_MS set to --retention, unless --gateway-url is given). Prints "
        "each service's memory growth after warm-up, the Redis keys without a TTL and those left after the calls' "
        "retention, failed calls and errors; exit code 0 only when every bound is met.",
    )
    soak.add_argument("--calls", type=int, default=1000, metavar="N", help="calls in all (default 1000)")
    soak.add_argument("--concurrency", type=int, default=50, metavar="N", help="calls at a time (default 50)")
    soak.add_argument(
        "--retention",
        type=_seconds,
        default=None,
        metavar="S",
        help="the calls' key retention: set on a stack started here (default 5 s); what the running stack uses "
        "otherwise (default CALL_RETENTION_MS)",
    )
    soak.add_argument("--warmup", type=int, default=None, metavar="N", help="warm-up calls (default 10 %% of --calls)")
    soak.add_argument("--max-growth", type=float, default=5.0, metavar="PCT", help="memory bound after warm-up (%%)")
    soak.add_argument("--short", action="store_true", help="calls of the greeting and a goodbye only (~15 s)")
    soak.add_argument("--json", metavar="FILE", default=None, help="also write the full result as JSON")
    soak.add_argument("--gateway-url", default=None, help="a running gateway to call instead of starting the stack")
    soak.add_argument("--redis-url", default=None, help="that stack's Redis (default REDIS_URL)")
    soak.add_argument("--log", default="voxcart-bench-soak.log", help="where the started stack's logs go")
    soak.set_defaults(func=cmd_bench_soak)
    gateway = bench_sub.add_parser(
        "gateway",
        help="the gateway alone under N calls of media: CPU per core, memory per call, pacing jitter, underruns",
        description="Redis and one gateway, a stand-in agent talking on every call through audio.out, and callers in "
        "several processes sending a media frame every 20 ms and playing the agent at real time. Per step: the "
        "gateway's cores and calls per core, memory per call, jitter p99 and underruns at the callers, against "
        "issue 8's target (200 calls per core, jitter p99 <= 10 ms, no underrun, <= 1 MB a call).",
    )
    gateway.add_argument(
        "--calls", default="50,100,200", metavar="N,N,...", help="steps of N calls (default 50,100,200)"
    )
    gateway.add_argument("--hold", type=float, default=30.0, metavar="S", help="each call's length (default 30 s)")
    gateway.add_argument("--stagger", type=float, default=0.02, metavar="S", help="between call starts (default 0.02)")
    gateway.add_argument(
        "--procs", type=int, default=None, metavar="N", help="caller processes (default 1 per 50 calls)"
    )
    gateway.add_argument(
        "--json", metavar="FILE", default="voxcart-bench-gateway.json", help="the result ('' for none)"
    )
    gateway.add_argument("--log", default="voxcart-bench-gateway.log", help="where the gateway's log goes")
    gateway.add_argument("--pin", action="store_true", help="run the gateway alone on one CPU, the rest on the others")
    gateway.set_defaults(func=cmd_bench_gateway)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
