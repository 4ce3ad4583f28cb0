"""An oxrl environment server in Python: the `digits` game (game.py) over oxrl.v1.Environment.

Any program that implements the Environment service of proto/oxrl.proto can be the
environment of an oxrl run: point the run config's `[episode] url` at it. This one shows
what such a server owes its clients (docs/remote-environments.md):

- Reset opens a session under the id the client chose, on the problem the actor leased
  (problem_id, prompt, answer). A repeated Reset of a session not yet stepped (a client's
  retry) gets the same observation.
- Step answers one model turn. Each carries its turn number (1, 2, ...); the server keeps
  each session's last (turn, reply) and answers a repeated turn from it, without playing
  it twice: the client retries a Step whose reply it did not get.
- A session the server does not hold is NOT_FOUND (the client drops the episode instead of
  guessing); a turn out of order or after the end is FAILED_PRECONDITION; past the cap on
  open sessions a Reset is RESOURCE_EXHAUSTED (the client retries later).
- Close ends a session; closing one the server does not hold is fine. Sessions idle for
  longer than --session-ttl-s are forgotten.
- With a token (OXRL_AUTH_TOKEN, or --auth-token-file), every call must carry
  `authorization: Bearer <token>`, as every oxrl server requires.

Usage (after generating the stubs, see README.md):

    python server.py --listen 127.0.0.1:50051

It prints `OXRL_LISTENING <host:port>` once bound (port 0 picks a free port), like the oxrl
roles, so a test or a supervisor can find it.
"""

import argparse
import hmac
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

import oxrl_pb2
import oxrl_pb2_grpc
from game import Digits

ENV_NAME = "digits"


class Session:
    """One episode: its game, the turns served and the last reply."""

    def __init__(self, problem_id, game):
        self.problem_id = problem_id
        self.game = game
        self.turns = 0
        self.last = None  # (turn, EnvStepReply)
        self.done = False
        self.last_used = time.monotonic()
        self.lock = threading.Lock()


class DigitsEnvironment(oxrl_pb2_grpc.EnvironmentServicer):
    """The Environment service over a table of sessions."""

    def __init__(self, max_sessions, session_ttl_s):
        self.max_sessions = max_sessions
        self.session_ttl_s = session_ttl_s
        self.sessions = {}
        self.lock = threading.Lock()

    def Reset(self, request, context):
        if request.env not in ("", ENV_NAME):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown environment {request.env!r}: this server runs {ENV_NAME}",
            )
        if not request.session_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "session_id is empty")
        with self.lock:
            existing = self.sessions.get(request.session_id)
            if existing is None:
                open_now = sum(1 for s in self.sessions.values() if not s.done)
                if open_now >= self.max_sessions:
                    context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{open_now} sessions are open, the most this server holds",
                    )
                try:
                    game = Digits(request.prompt, request.answer)
                except ValueError as e:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                self.sessions[request.session_id] = Session(request.problem_id, game)
                return oxrl_pb2.EnvResetReply(observation=game.observation)
        # A retried Reset: the same answer, if nothing happened since.
        with existing.lock:
            if existing.problem_id != request.problem_id or existing.turns > 0:
                context.abort(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"session {request.session_id!r} is already open on another problem "
                    "or already stepped",
                )
            existing.last_used = time.monotonic()
            return oxrl_pb2.EnvResetReply(observation=existing.game.observation)

    def Step(self, request, context):
        with self.lock:
            session = self.sessions.get(request.session_id)
        if session is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"session {request.session_id!r} is not open on this server: never reset, "
                "closed, idled out, or the server restarted",
            )
        with session.lock:
            session.last_used = time.monotonic()
            if request.turn and session.last and session.last[0] == request.turn:
                return session.last[1]
            turn = request.turn or session.turns + 1
            if turn != session.turns + 1:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"turn {turn} after {session.turns} turns: send turn "
                    f"{session.turns + 1} next",
                )
            if session.done:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"the episode ended after {session.turns} turns",
                )
            observation, reward, done = session.game.step(request.action)
            reply = oxrl_pb2.EnvStepReply(observation=observation, reward=reward, done=done)
            session.turns = turn
            session.last = (turn, reply)
            session.done = done
            return reply

    def Close(self, request, context):
        with self.lock:
            self.sessions.pop(request.session_id, None)
        return oxrl_pb2.EnvCloseReply()

    def reap(self):
        """Forgets sessions idle for longer than the TTL."""
        cutoff = time.monotonic() - self.session_ttl_s
        with self.lock:
            idle = [k for k, s in self.sessions.items() if s.last_used < cutoff]
            for k in idle:
                del self.sessions[k]


class RequireToken(grpc.ServerInterceptor):
    """Refuses (UNAUTHENTICATED) every call without `authorization: Bearer <token>`."""

    def __init__(self, token):
        self.expected = f"Bearer {token}".encode()

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self.refusal = grpc.unary_unary_rpc_method_handler(refuse)

    def intercept_service(self, continuation, handler_call_details):
        given = dict(handler_call_details.invocation_metadata).get("authorization", "")
        if hmac.compare_digest(given.encode(), self.expected):
            return continuation(handler_call_details)
        return self.refusal


def read_token(args):
    """The token from --auth-token-file, else OXRL_AUTH_TOKEN, else None."""
    if args.auth_token_file:
        with open(args.auth_token_file) as f:
            token = f.read().strip()
    else:
        token = os.environ.get("OXRL_AUTH_TOKEN", "").strip() or None
    if token is not None and not token:
        sys.exit(f"the token in {args.auth_token_file} is empty")
    return token


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:50051", help="host:port (port 0: any)")
    parser.add_argument("--max-sessions", type=int, default=1024)
    parser.add_argument("--session-ttl-s", type=float, default=600.0)
    parser.add_argument("--auth-token-file", help="file holding the bearer token")
    args = parser.parse_args()

    token = read_token(args)
    service = DigitsEnvironment(args.max_sessions, args.session_ttl_s)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        interceptors=[RequireToken(token)] if token else [],
    )
    oxrl_pb2_grpc.add_EnvironmentServicer_to_server(service, server)
    port = server.add_insecure_port(args.listen)
    if port == 0:
        sys.exit(f"cannot listen on {args.listen}")
    server.start()
    host = args.listen.rsplit(":", 1)[0]
    print(f"OXRL_LISTENING {host}:{port}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(min(30.0, args.session_ttl_s / 4)):
        service.reap()
    server.stop(grace=5).wait()


if __name__ == "__main__":
    main()
