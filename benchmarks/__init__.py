"""Benchmarks of the flowith library against its peers, side by side in one run.

``python -m benchmarks [--quick] [--only sse,pipeline,e2e,requests] [--markdown PATH]``
(or ``nox -s bench -- ...``) measures, in one process tree and one run:

* ``sse``: :class:`flowith_proto.sse.SSEDecoder` against httpx-sse and the old
  client's string-buffer approach, on a deterministic Flowith stream;
* ``pipeline``: bytes to routed, think-split events through a
  :class:`~flowith_proto.stream.StreamRouter`;
* ``e2e``: concurrent streamed generations against the fake Flowith on
  loopback, on every transport and through the old ``flowith_webapi`` client;
* ``requests``: one PostgREST listing of 1,000 rows against a bare GET.

Absolute times on a shared machine are noise: the figures that count are the
ratios between contenders measured in the same run, each a median of
repeated runs. Inputs are generated deterministically, so two runs measure
the same bytes.
"""
