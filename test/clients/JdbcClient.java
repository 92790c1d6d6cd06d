/*
 * The JDBC (pgjdbc) client of the streaming client matrix
 * (test/clients/run.sh).  Runs llm.chat_stream('hi', MODEL) one way and
 * prints, one line each, what reached it and when (wall clock,
 * microseconds since the epoch, comparable with the mock provider's
 * trace):
 *
 *     <t_us> ROW <text>            a row
 *     <t_us> EV <NAME> [detail]    CANCEL, CLOSE, ERROR <sqlstate> <msg>,
 *                                  AFTER <value of SELECT 1>, DONE
 *
 * usage: java -cp .:postgresql.jar JdbcClient MODE MODEL [N]
 *
 *   fetch1           autocommit off, setFetchSize(1)
 *   autocommit       autocommit on, setFetchSize(1) (the driver ignores the
 *                    fetch size and reads the whole result)
 *   cancelquery N    fetch1; after N rows another thread calls
 *                    ((BaseConnection) conn).cancelQuery() while this one
 *                    waits in rs.next()
 *   stmtcancel N     fetch1; after N rows another thread calls
 *                    Statement.cancel() while this one waits in rs.next()
 *   stmtcancel-exec  fetch1; Statement.cancel() from another thread 500 ms
 *                    after executeQuery was called, before the first row
 *                    (use a model with latency=)
 *   close N          fetch1; rs.close() after N rows, then rollback()
 *   close-only N     fetch1; rs.close() after N rows, then 1 s of nothing,
 *                    then rollback() (events CLOSE, ROLLBACK)
 *   cancelquery-idle N  fetch1; after N rows this thread calls
 *                    cancelQuery() (the backend is idle between fetches),
 *                    sleeps 0.5 s, and fetches on
 *
 * Every mode that stops a stream then closes the result set, rolls back
 * and runs SELECT 1 on the same connection.  Connection from PGHOST,
 * PGPORT, PGUSER, PGDATABASE.
 */
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Instant;
import java.util.concurrent.CountDownLatch;

public class JdbcClient {
	static long nowUs() {
		Instant i = Instant.now();
		return i.getEpochSecond() * 1000000L + i.getNano() / 1000;
	}

	static synchronized void out(long t, String kind, String text) {
		System.out.println(t + " " + kind + " " + text);
		System.out.flush();
	}

	static void row(String text) {
		out(nowUs(), "ROW", text.replaceAll("[\r\n]+$", ""));
	}

	static void ev(String name, String detail) {
		out(nowUs(), "EV", detail == null ? name : name + " " + detail);
	}

	static void error(SQLException e) {
		String msg = String.valueOf(e.getMessage()).split("\n")[0];
		ev("ERROR", (e.getSQLState() == null ? "?" : e.getSQLState()) + " " + msg);
	}

	static void after(Connection conn) {
		try (Statement s = conn.createStatement(); ResultSet rs = s.executeQuery("SELECT 1")) {
			rs.next();
			ev("AFTER", rs.getString(1));
		} catch (SQLException e) {
			ev("AFTER-FAILED", e.getMessage());
		}
	}

	interface Action {
		void run() throws Exception;
	}

	/* A thread that runs the action once the latch opens. */
	static void later(CountDownLatch ready, long sleepMs, Action a) {
		Thread t = new Thread(() -> {
			try {
				ready.await();
				Thread.sleep(sleepMs);
				ev("CANCEL", null);
				a.run();
				ev("CANCEL-RETURNED", null);
			} catch (Exception e) {
				ev("CANCEL-FAILED", e.toString());
			}
		});
		t.setDaemon(true);
		t.start();
	}

	public static void main(String[] args) throws Exception {
		String mode = args[0];
		String model = args[1];
		int n = args.length > 2 ? Integer.parseInt(args[2]) : 0;
		String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT")
			+ "/" + System.getenv("PGDATABASE");
		Connection conn = DriverManager.getConnection(url, System.getenv("PGUSER"), "");
		conn.setAutoCommit(mode.equals("autocommit"));
		PreparedStatement ps = conn.prepareStatement("SELECT llm.chat_stream('hi', ?)");
		ps.setString(1, model);
		ps.setFetchSize(1);
		CountDownLatch ready = new CountDownLatch(1);

		if (mode.equals("cancelquery"))
			later(ready, 20, () -> ((org.postgresql.core.BaseConnection) conn).cancelQuery());
		else if (mode.equals("stmtcancel"))
			later(ready, 20, () -> ps.cancel());
		else if (mode.equals("stmtcancel-exec")) {
			later(ready, 500, () -> ps.cancel());
			ready.countDown();
		}

		ResultSet rs = null;
		int k = 0;
		boolean stopped = false;
		try {
			rs = ps.executeQuery();
			while (rs.next()) {
				row(rs.getString(1));
				k++;
				if (k == n && (mode.equals("cancelquery") || mode.equals("stmtcancel")))
					ready.countDown();
				if (k == n && mode.equals("cancelquery-idle")) {
					ev("CANCEL", null);
					((org.postgresql.core.BaseConnection) conn).cancelQuery();
					Thread.sleep(500);
					ev("RESUME", null);
				}
				if (k == n && mode.equals("close-only")) {
					ev("CLOSE", null);
					rs.close();
					Thread.sleep(1000);
					ev("ROLLBACK", null);
					conn.rollback();
					ev("ROLLED-BACK", null);
					stopped = true;
					break;
				}
				if (k == n && mode.equals("close")) {
					ev("CLOSE", null);
					rs.close();
					conn.rollback();
					ev("ROLLED-BACK", null);
					stopped = true;
					break;
				}
			}
		} catch (SQLException e) {
			error(e);
			stopped = true;
		}
		if (!stopped && (mode.startsWith("stmtcancel") || mode.equals("cancelquery-idle")))
			stopped = true;	/* the stream ended by itself: SELECT 1 all the same */
		if (!conn.getAutoCommit()) {
			if (rs != null)
				rs.close();
			conn.rollback();
		}
		if (stopped)
			after(conn);
		conn.close();
		ev("DONE", null);
	}
}
