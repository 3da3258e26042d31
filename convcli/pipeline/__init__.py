"""The use cases, between the command line and the layers that do the work.

- ``options``: what a command asks for, as typed and checked values;
- ``filter``: one file read, filtered by a chain of kernels and written, with a report;
- ``alpha``: how the chain treats transparency;
- ``streamed``: a file over the memory budget, band by band between memory maps;
- ``batch``: inputs walked and paired with outputs, jobs run in worker processes;
- ``classify``: one photo to its top classes and, optionally, its class-activation map;
- ``outputs``: the guard against writing over an input.

Each use case is a function of paths and options that returns a report and
never prints; the command line reports.
"""
