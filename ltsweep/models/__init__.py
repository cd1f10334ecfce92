"""Networks: ResNet18 with a width and a CIFAR or ImageNet stem (`resnet`), MLP heads (`heads`).

May import: torch only.
"""
