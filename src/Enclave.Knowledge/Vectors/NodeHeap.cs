using System.Runtime.CompilerServices;

namespace Enclave.Knowledge.Vectors;

/// <summary>
/// A binary min-heap of (key, node) pairs in two reusable arrays: the candidate queue and, with negated keys, the
/// bounded result set of a search. Pushing and popping never allocate once the arrays have grown to the search's ef.
/// </summary>
internal sealed class NodeHeap
{
    private float[] _keys = new float[64];
    private int[] _nodes = new int[64];

    public int Count { get; private set; }

    public float TopKey => _keys[0];

    public int TopNode => _nodes[0];

    public void Clear() => Count = 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push(float key, int node)
    {
        if (Count == _keys.Length)
        {
            Array.Resize(ref _keys, Count * 2);
            Array.Resize(ref _nodes, Count * 2);
        }

        var i = Count++;
        while (i > 0)
        {
            var parent = (i - 1) >> 1;
            if (_keys[parent] <= key)
            {
                break;
            }

            _keys[i] = _keys[parent];
            _nodes[i] = _nodes[parent];
            i = parent;
        }

        _keys[i] = key;
        _nodes[i] = node;
    }

    public void Pop()
    {
        var last = --Count;
        if (last > 0)
        {
            SiftDown(_keys[last], _nodes[last]);
        }
    }

    /// <summary>Pop then push in one sift: what a full bounded heap does when a better item arrives.</summary>
    public void ReplaceTop(float key, int node) => SiftDown(key, node);

    private void SiftDown(float key, int node)
    {
        var i = 0;
        var count = Count;
        while (true)
        {
            var child = 2 * i + 1;
            if (child >= count)
            {
                break;
            }

            if (child + 1 < count && _keys[child + 1] < _keys[child])
            {
                child++;
            }

            if (_keys[child] >= key)
            {
                break;
            }

            _keys[i] = _keys[child];
            _nodes[i] = _nodes[child];
            i = child;
        }

        _keys[i] = key;
        _nodes[i] = node;
    }
}
