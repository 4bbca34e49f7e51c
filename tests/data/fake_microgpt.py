"""A stand-in for Karpathy's microgpt.py in the bench's tests: reads input.txt
from its working directory and prints what the original prints, in its order,
without training anything. FAKE_MICROGPT (environment) picks a behaviour:
    (unset)  every step line, FAKE_MICROGPT_SLEEP seconds apart (default 0.01),
             each ended by a carriage return as the original ends them
    early    exits with code 1 and a message on stderr after step 3
    silent   prints the header lines, then sleeps without printing steps
"""

import os
import sys
import time

mode = os.environ.get("FAKE_MICROGPT", "")
pause = float(os.environ.get("FAKE_MICROGPT_SLEEP", "0.01"))
if not os.path.exists("input.txt"):  # the original would try to download one
    sys.exit("input.txt missing")
docs = [line.strip() for line in open("input.txt") if line.strip()]
print(f"num docs: {len(docs)}")
print(f"vocab size: {len(set(''.join(docs))) + 1}")
print("num params: 4192")
if mode == "silent":
    time.sleep(600)
num_steps = 1000
for step in range(num_steps):
    time.sleep(pause)
    print(f"step {step + 1:4d} / {num_steps:4d} | loss {3.3 - step / 1000:.4f}", end="\r")
    if mode == "early" and step + 1 == 3:
        sys.exit("fake failure after step 3")
