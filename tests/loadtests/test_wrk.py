"""Parsing of wrk's output (captured from real runs on this machine) and, where wrk is installed, a short
real run against a real server."""

import shutil

import pytest

from loadtests.wrk import lua_script, main, parse_wrk

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:3101/predict_housing
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    30.88ms    3.65ms   1.09s    86.69%
    Req/Sec     1.04k    95.32     1.16k    73.00%
  Latency Distribution
     50%  829.00us
     75%   31.51ms
     90%   35.33ms
     99%   44.60ms
  10359 requests in 10.01s, 2.05MB read
  Non-2xx or 3xx responses: 138
Requests/sec:   1035.18
Transfer/sec:    209.28KB
"""


def test_parse_wrk_reads_rate_percentiles_max_and_errors():
    row = parse_wrk(WRK_OUTPUT)
    assert row["rps"] == 1035.18 and row["requests"] == 10359
    assert row["p50_ms"] == pytest.approx(0.829) and row["p99_ms"] == pytest.approx(44.6)
    assert row["max_ms"] == pytest.approx(1090.0)
    assert row["non_2xx"] == 138


def test_lua_script_sends_the_body_file_as_read_and_the_headers(tmp_path):
    script = lua_script(tmp_path / "body", {"Inference-Header-Content-Length": "123"})
    assert f'io.open("{tmp_path / "body"}", "rb")' in script and 'wrk.body = f:read("*a")' in script
    assert 'wrk.headers["Inference-Header-Content-Length"] = "123"' in script


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_short_wrk_run_against_the_service(smoke_models, tmp_path):
    cases = ["housing_1", "mnist_1", "v2_binary_mnist_1"]  # V2: binary tensors sent intact, else 400s
    rows = main(["--servers", "ours", "--cases", ",".join(cases), "--duration", "2", "--connections", "4",
                 "--pause", "0", "--out", str(tmp_path / "wrk.json")])  # fmt: skip
    assert [r["case"] for r in rows] == cases
    for row in rows:
        assert row["requests"] > 0 and row["non_2xx"] == 0, row
