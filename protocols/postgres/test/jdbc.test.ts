import t from 'tap'
import { execFile as execFileCb } from 'node:child_process'
import { promisify } from 'node:util'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { startGateway } from './harness.ts'

const execFile = promisify(execFileCb)
const JAR = '/usr/share/java/postgresql.jar'

const PROGRAM = `
import java.sql.*;
public class JdbcProbe {
  public static void main(String[] a) throws Exception {
    try (Connection c = DriverManager.getConnection(a[0], "agent-1", a[1])) {
      // past prepareThreshold (5) pgjdbc switches to a named server-side statement
      try (PreparedStatement ps = c.prepareStatement("select label from things where id = ?")) {
        for (int i = 0; i < 7; i++) {
          ps.setInt(1, 1 + (i % 2));
          try (ResultSet rs = ps.executeQuery()) { rs.next(); System.out.println("row " + rs.getString(1)); }
        }
      }
      try (Statement s = c.createStatement()) {
        s.execute("truncate things");
      } catch (SQLException e) {
        System.out.println("refused " + e.getSQLState());
      }
      try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("select count(*) from things")) {
        rs.next(); System.out.println("count " + rs.getInt(1));
      }
    }
  }
}
`

t.test('pgjdbc: server-side prepared statements and a refused statement', { skip: !existsSync(JAR) && 'pgjdbc jar not installed' }, async t => {
  const gw = await startGateway()
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ connectionString: gw.pg.url })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query("create table things (id int, label text); insert into things values (1, 'one'), (2, 'two')")
  const dir = mkdtempSync(join(tmpdir(), 'jdbc-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'JdbcProbe.java'), PROGRAM)
  const url = `jdbc:postgresql://127.0.0.1:${gw.port}/app?sslmode=disable`
  const { stdout } = await execFile('java', ['-cp', JAR, join(dir, 'JdbcProbe.java'), url, await gw.token()], { timeout: 50_000 })
  const lines = stdout.trim().split('\n')
  t.same(lines.slice(0, 7), ['row one', 'row two', 'row one', 'row two', 'row one', 'row two', 'row one'])
  t.equal(lines[7], 'refused 42501')
  t.equal(lines[8], 'count 2')
})
