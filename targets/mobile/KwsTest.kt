// The UniFFI Kotlin bindings of edgefleet-uniffi on the JVM, against the host
// library through JNA (the same code an Android app runs against the .so
// from cargo-ndk).
//
//   KwsTestKt PACKAGE.efm INPUT.npy EXPECTED.npy
//
// Runs the int8 and float paths on the KWS package, checks both against the
// expected (TensorFlow Lite Micro) output, and checks the typed exceptions.
// Any failed check throws, so the JVM exits non-zero.

import dev.edgefleet.EdgefleetException
import dev.edgefleet.EdgefleetModel
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

fun readNpyI8(path: String): List<Byte> {
    val b = File(path).readBytes()
    check(b.size > 12 && b[0] == 0x93.toByte() && String(b, 1, 5) == "NUMPY") { "$path: not a .npy file" }
    val le = ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN)
    val (start, len) = if (b[6].toInt() == 1) Pair(10, le.getShort(8).toInt() and 0xFFFF) else Pair(12, le.getInt(8))
    val header = String(b, start, len)
    check(header.contains("i1'") && header.contains("'fortran_order': False")) { "$path: not a C-order int8 array" }
    return b.copyOfRange(start + len, b.size).toList()
}

fun main(args: Array<String>) {
    val model = EdgefleetModel(File(args[0]).readBytes())
    val x = readNpyI8(args[1])
    val want = readNpyI8(args[2])
    val input = model.inputs().single()
    val output = model.outputs().single()
    check(model.arenaSize() == 16000UL) { "arena ${model.arenaSize()}" }
    check(input.shape == listOf(1u, 49u, 10u, 1u)) { "input shape ${input.shape}" }

    val got = model.runI8(listOf(x)).single()
    check(got == want) { "int8: got $got, expected $want" }

    val floats = x.map { input.scale * (it - input.zeroPoint) }
    val scores = model.runF32(listOf(floats)).single()
    val expected = want.map { output.scale * (it - output.zeroPoint) }
    check(scores == expected) { "float: got $scores, expected $expected" }

    try {
        EdgefleetModel(ByteArray(100))
        error("a corrupt package was accepted")
    } catch (e: EdgefleetException.InvalidPackage) {
        check(e.reason.contains("magic")) { e.reason }
    }
    try {
        model.runI8(listOf(x.take(10)))
        error("a short input was accepted")
    } catch (e: EdgefleetException.InvalidArgument) {
        check(e.reason.contains("490")) { e.reason }
    }
    model.close()

    val top = got.indices.maxByOrNull { got[it] } ?: -1
    println("kotlin bindings: ok, output $got, top class '${output.labels.getOrElse(top) { "$top" }}'")
}
