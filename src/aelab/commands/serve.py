"""``aelab serve RUN``: the latent-space explorer of a run folder (or a folder of runs) in the browser."""
from __future__ import annotations

import sys

from ..errors import AelabError


def cmd_serve(args) -> int:
    try:
        from ..web import create_app, find_runs, is_loopback, serve, url_of
        from ..web.server import LOOPBACK_NAMES, bind, listens_everywhere
    except ImportError as exc:  # the web app's framework is a dependency, but an environment may lack it
        if (exc.name or "").split(".")[0] not in ("fastapi", "starlette", "pydantic", "uvicorn"):
            raise
        raise AelabError(f"aelab serve needs the web framework ({exc.name} is missing); "
                         f"pip install fastapi uvicorn") from None

    runs = find_runs(args.run)  # a missing or non-run folder: one line and exit 2, before anything loads
    sock = bind(args.host, args.port)
    try:
        loopback = is_loopback(args.host)
        if not loopback:
            print(f"aelab: warning: serving on {args.host}, not loopback: anyone who can reach this machine can "
                  f"use the explorer (it reads only {args.run} and its own files)", file=sys.stderr)
        say = (lambda message: None) if args.quiet else (lambda message: print(message, flush=True))
        hosts = [*LOOPBACK_NAMES, args.host] if loopback and ":" not in args.host else None
        app = create_app(args.run, method=args.map, device=args.device, allowed_hosts=hosts, log=say,
                         audio_data=args.audio_data)
        what = runs[0] if len(runs) == 1 else f"{len(runs)} runs in {args.run}"
        note = ("listening on all interfaces: from another machine, open this machine's name or address; "
                if listens_everywhere(sock) else "")
        print(f"serving {what} at {url_of(sock)} ({note}Ctrl-C to stop)", flush=True)
        serve(app, sock)
    finally:
        sock.close()
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("serve", help="explore a run's latent space in the browser",
                       description="Start a local web app for a run folder (or a folder of runs, with a picker): "
                                   "the map of the test codes, images on hover, the code of a point as sliders "
                                   "that redraw the decoded image, interpolations and samples; for a multimodal "
                                   "run, the map of its images' codes, a text box that turns a word into images, "
                                   "and beside the code on screen the word decoded from it and the nearest test "
                                   "recordings; with audio, each recording as its MFCC picture and on the map. "
                                   "Blocks until Ctrl-C. The first start of a run computes its map (cached in the "
                                   "run folder).")
    s.add_argument("run", metavar="RUN", help="a run folder written by aelab train, or a folder holding several")
    s.add_argument("--port", type=int, default=8000, metavar="N", help="TCP port (default: 8000; 0: a free one)")
    s.add_argument("--host", default="127.0.0.1", metavar="H",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every interface; "
                        "another than loopback prints a warning)")
    s.add_argument("--map", choices=("tsne", "pca"), default="tsne",
                   help="the map of the test codes: tsne, or pca (linear: any position can be decoded) "
                        "(default: tsne; 2-D codes are drawn as they are)")
    s.add_argument("--device", default="auto", help="where the model runs: auto, cpu, cuda, cuda:N (default: auto)")
    s.add_argument("--audio-data", metavar="PATH", default=None,
                   help="multimodal runs with audio: the FSDD MFCC file digits.npz (default: the run's own setting, "
                        "then $AELAB_DATA_DIR/fsdd-mfcc/digits.npz, then the cache)")
    s.add_argument("--quiet", action="store_true", help="no progress messages")
    s.set_defaults(func=cmd_serve)
