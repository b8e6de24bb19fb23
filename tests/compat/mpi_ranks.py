"""Four MPI ranks (scripts/compat, case mpi): collectives over Python
objects, so every rank allocates; rank 0 prints the results."""
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
data = {f"r{rank}k{i}": [rank * i + j for j in range(i % 17)] for i in range(20000)}
total = comm.allreduce(sum(len(v) for v in data.values()), op=MPI.SUM)
keys = comm.gather(sorted(data)[:3], root=0)
token = comm.bcast("from rank 0" if rank == 0 else None, root=0)
ring = comm.sendrecv(rank, dest=(rank + 1) % size, source=(rank - 1) % size)
rings = comm.gather(ring, root=0)
if rank == 0:
    print(size, total, keys, token, rings)
