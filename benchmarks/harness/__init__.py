"""The harness every suite shares: fresh worker processes, the rounds loop, noise, results.

* :mod:`.paths`: where the repository, the results and the cache are; the abort error;
* :mod:`.rounds`: the one rounds loop (clients alternating, noisy rounds run again);
* :mod:`.workers`: one run in a fresh Python process, JSON in and out;
* :mod:`.noise`: the noise meter (what other programs used of the CPU meanwhile);
* :mod:`.measure`: the timed span inside a worker (wall, CPU, memory);
* :mod:`.ratios`: per-round ratios and their medians;
* :mod:`.report`: the lines every report shares, and the JSON file;
* :mod:`.machine`: what machine the numbers were measured on;
* :mod:`.messages`: messages of an exact size, and their digests;
* :mod:`.endpoint`: where a client connects, possibly through a proxy.
"""
