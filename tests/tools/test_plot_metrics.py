#!/usr/bin/env python3
"""tools/plot_metrics: a CSVLogger-style metrics.csv becomes a valid SVG with one panel per quantity and one line per
series; a file that is not a metrics.csv is a clear error."""
import os
import subprocess
import sys
import tempfile
import xml.dom.minidom

tool = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "plot_metrics")
with tempfile.TemporaryDirectory() as d:
    csv_path = os.path.join(d, "metrics.csv")
    with open(csv_path, "w") as f:
        f.write("epoch,step,loss_step,val_loss,loss_epoch,val_acc\n"
                "0,50,2.0,,,\n0,100,1.5,,,\n0,100,,1.4,1.7,0.6\n1,150,1.0,,,\n1,200,0.8,,,\n1,200,,0.9,0.9,0.8\n")
    svg_path = os.path.join(d, "curves.svg")
    subprocess.run([sys.executable, tool, csv_path, "-o", svg_path, "--title", "run"], check=True)
    doc = xml.dom.minidom.parse(svg_path)
    titles = [t.firstChild.data for t in doc.getElementsByTagName("text") if t.getAttribute("font-size") == "13"]
    assert titles == ["loss", "acc"], titles
    lines = doc.getElementsByTagName("polyline")
    assert len(lines) == 4, len(lines)  # loss_step, val_loss, loss_epoch, val_acc
    first = [tuple(map(float, p.split(","))) for p in lines[0].getAttribute("points").split()]
    assert len(first) == 4 and first[0][1] < first[-1][1], first  # the loss falls: SVG y grows downward

    bad = os.path.join(d, "bad.csv")
    with open(bad, "w") as f:
        f.write("a,b\n1,2\n")
    result = subprocess.run([sys.executable, tool, bad, "-o", os.path.join(d, "x.svg")], capture_output=True, text=True)
    assert result.returncode != 0 and "no 'step' column" in result.stderr, result.stderr
print("plot_metrics: ok")
