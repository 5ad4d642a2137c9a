"""The Python half of examples/python_interop: the same MLP as finetune.cpp, in PyTorch.

  mlp.py init STATE              a freshly initialised (seeded) MLP's state_dict, torch.save'd to STATE: the weights
                                 the C++ side starts from (a published state_dict, or a Lightning .ckpt, works alike)
  mlp.py check STATE OUTPUTS     loads the C++ fine-tuned STATE into the Python MLP (strict) and checks that it gives the
                                 outputs the C++ model gave on the same inputs (OUTPUTS: {"images", "logits"}), to 1e-6

Run with an interpreter that has torch (Debian's python3-torch: /usr/bin/python3)."""
import sys

import torch


class Mlp(torch.nn.Module):
    """784-128-10: attribute names are the C++ module's registered names, so the state dicts' keys agree."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def main():
    command, state = sys.argv[1], sys.argv[2]
    if command == "init":
        torch.manual_seed(0)
        torch.save(Mlp().state_dict(), state)
        print(f"wrote an initialised MLP's state_dict to {state}")
        return 0
    model = Mlp()
    model.load_state_dict(torch.load(state))
    model.eval()
    outputs = torch.load(sys.argv[3])
    with torch.no_grad():
        logits = model(outputs["images"])
    worst = (logits - outputs["logits"]).abs().max().item()
    accuracy = (logits.argmax(1) == outputs["labels"]).float().mean().item()
    print(f"Python's MLP with the C++ weights: max |difference| from C++'s logits {worst:.2e} on "
          f"{logits.shape[0]} test images, accuracy {100 * accuracy:.2f}%")
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
